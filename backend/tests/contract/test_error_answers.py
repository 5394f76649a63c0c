"""Every operation documents the errors it can answer, with the exact codes, collected from the code that raises
them (app/core/raises.py, app/core/openapi.py); and the typed pieces of the document (headers, 202, health,
enums, password constraints). The drift check that holds the document to what the suite observes is
tests/documented.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.auth.exceptions import InvalidCredentialsError, SessionRevokedError
from app.contract import build_openapi
from app.core import raises as raises_module
from app.core.errors import AppError, Conflict, NotFound
from app.core.raises import errors_of, raises
from app.core.settings import Settings
from app.main import create_app
from tests.contract.test_openapi import operations
from tests.documented import Documented, documented

API = "/api/v1"
OWN_TOKEN_401 = {"not_authenticated", "invalid_token", "token_expired", "session_revoked", "inactive_user"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi()


def codes(document: dict[str, Any], path: str, method: str, status: int) -> set[str]:
    response = document["paths"][path][method]["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} documents no {status}"
    ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    return set(document["components"]["schemas"][ref]["properties"]["code"]["enum"])


def protected(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(path, method) for path, method, op in operations(document) if op.get("security")]


class TestEveryTokenKind:
    def test_every_protected_operation_lists_the_codes_of_every_token_kind(self, document: dict[str, Any]) -> None:
        missing = []
        for path, method in protected(document):
            if path == f"{API}/auth/logout":
                continue  # works without a token too: its own case below
            found = {
                401: codes(document, path, method, 401),
                403: codes(document, path, method, 403),
                409: codes(document, path, method, 409),
                503: codes(document, path, method, 503),
            }
            expected = {
                401: OWN_TOKEN_401 | {"invalid_api_key"},
                403: {"anonymous_user", "api_key_not_allowed"},
                409: {"account_exists"},
                503: {"jwks_unavailable"},
            }
            for status, wanted in expected.items():
                if not wanted <= found[status]:
                    missing.append(f"{method.upper()} {path} {status}: {sorted(wanted - found[status])}")
        assert missing == []

    def test_org_and_admin_operations_list_mfa_required(self, document: dict[str, Any]) -> None:
        for path, method in protected(document):
            if path.startswith((f"{API}/organizations/{{org_id}}", f"{API}/admin/")):
                assert "mfa_required" in codes(document, path, method, 403), f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "method", "status", "expected"),
    [
        ("/auth/register", "post", 409, {"email_taken"}),
        ("/auth/login", "post", 401, {"invalid_credentials", "inactive_user"}),
        ("/auth/refresh", "post", 401, {"refresh_token_reused", "refresh_token_expired", "invalid_refresh_token"}),
        ("/auth/refresh", "post", 403, {"csrf_failed"}),
        ("/auth/mfa/verify", "post", 401, {"invalid_code", "mfa_token_invalid"}),
        ("/users/me/email", "post", 409, {"email_taken", "managed_by_supabase"}),
        ("/profile", "get", 404, {"profile_not_found"}),
        ("/credits/spend", "post", 402, {"insufficient_credits"}),
        ("/organizations/{org_id}/members/{user_id}", "patch", 409, {"last_owner"}),
        ("/organizations/{org_id}/members", "post", 409, {"already_member"}),
        ("/organizations/{org_id}", "get", 404, {"org_not_found"}),
        ("/invitations/accept", "post", 403, {"invitation_email_mismatch"}),
        ("/admin/users/{user_id}", "delete", 409, {"sole_owner", "last_superuser"}),
    ],
)
def test_domain_codes_are_listed(
    document: dict[str, Any], path: str, method: str, status: int, expected: set[str]
) -> None:
    assert expected <= codes(document, API + path, method, status)


def test_codes_are_exact_not_generic(document: dict[str, Any]) -> None:
    """A public operation does not inherit the token codes, and an operation lists no code of another domain."""
    assert codes(document, f"{API}/auth/register", "post", 409) == {"email_taken"}
    assert "401" not in document["paths"][f"{API}/auth/register"]["post"]["responses"]
    assert "last_owner" not in codes(document, f"{API}/users/me/email", "post", 409)


class TestFrameworkAnswers:
    def test_every_api_operation_documents_429_with_retry_after(self, document: dict[str, Any]) -> None:
        for path, method, operation in operations(document):
            if not path.startswith(API):
                continue
            answer = operation["responses"]["429"]
            assert codes(document, path, method, 429) == {"rate_limited"}
            assert set(answer["headers"]) == {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"}
            assert "database_unavailable" in codes(document, path, method, 503)

    def test_successes_declare_the_rate_limit_headers(self, document: dict[str, Any]) -> None:
        headers = document["components"]["headers"]
        assert headers["Retry-After"]["schema"]["type"] == "integer" and headers["Retry-After"]["required"]
        assert headers["X-RateLimit-Limit"]["schema"]["type"] == "integer"
        assert not headers["X-RateLimit-Limit"]["required"]  # absent while limits are off
        answer = document["paths"][f"{API}/users/me"]["get"]["responses"]["200"]
        assert set(answer["headers"]) == {"X-RateLimit-Limit", "X-RateLimit-Remaining"}

    def test_401_declares_www_authenticate(self, document: dict[str, Any]) -> None:
        answer = document["paths"][f"{API}/users/me"]["get"]["responses"]["401"]
        assert answer["headers"] == {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}}

    def test_422_declares_its_code(self, document: dict[str, Any]) -> None:
        schema = document["components"]["schemas"]["HTTPValidationError"]
        assert schema["required"] == ["detail", "code"]
        assert {"validation_error", "invalid_json"} <= set(schema["properties"]["code"]["enum"])

    def test_json_bodies_document_413_and_415(self, document: dict[str, Any]) -> None:
        assert codes(document, f"{API}/auth/register", "post", 413) == {"payload_too_large"}
        assert codes(document, f"{API}/auth/register", "post", 415) == {"unsupported_media_type"}
        assert "413" not in document["paths"][f"{API}/users/me"]["get"]["responses"]

    def test_error_read_code_is_the_enum_of_every_code(self, document: dict[str, Any]) -> None:
        schemas = document["components"]["schemas"]
        assert schemas["ErrorRead"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
        every = set(schemas["ErrorCode"]["enum"])
        listed = {
            code
            for path, method, operation in operations(document)
            for status in operation["responses"]
            if status[0] in "45" and status != "422" and (path, method, status) != ("/health", "get", "503")
            for code in codes(document, path, method, int(status))
        }
        assert listed <= every and {"email_taken", "rate_limited", "not_found", "method_not_allowed"} <= every


class TestTypedAnswers:
    @pytest.mark.parametrize("path", ["/auth/verify-email/request", "/auth/password-reset/request", "/users/me/email"])
    def test_202_bodies_are_typed(self, document: dict[str, Any], path: str) -> None:
        answer = document["paths"][API + path]["post"]["responses"]["202"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Accepted"}
        accepted = document["components"]["schemas"]["Accepted"]
        assert accepted["properties"]["status"]["const"] == "accepted" and accepted["required"] == ["status"]

    def test_health_is_typed(self, document: dict[str, Any]) -> None:
        answer = document["paths"]["/health"]["get"]["responses"]["200"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/HealthRead"}
        health = document["components"]["schemas"]["HealthRead"]["properties"]
        assert health["environment"] == {"$ref": "#/components/schemas/Environment"}

    def test_auth_provider_is_an_enum(self, document: dict[str, Any]) -> None:
        user = document["components"]["schemas"]["UserRead"]["properties"]
        assert user["auth_provider"] == {"$ref": "#/components/schemas/AuthProvider"}
        assert document["components"]["schemas"]["AuthProvider"]["enum"] == ["local", "supabase"]

    @pytest.mark.parametrize(
        ("schema", "field"),
        [
            ("RegisterRequest", "password"),
            ("PasswordChangeRequest", "new_password"),
            ("PasswordResetConfirm", "new_password"),
        ],
    )
    def test_new_passwords_carry_the_form_constraints(self, document: dict[str, Any], schema: str, field: str) -> None:
        password = document["components"]["schemas"][schema]["properties"][field]
        assert (password["minLength"], password["maxLength"], password["pattern"]) == (8, 128, r"\S")


# --- the analysis itself -------------------------------------------------------------------------------------


class _Missing(NotFound):
    code = "test_missing"


class _Clash(Conflict):
    code = "test_clash"


def _helper(flag: bool) -> None:
    if flag:
        raise _Missing()


def _translating() -> None:
    try:
        _helper(True)
    except _Missing:
        raise _Clash() from None


def _reraising() -> None:
    try:
        _helper(True)
    except AppError:
        raise


class _Service:
    def run(self) -> None:
        self._inner()

    def _inner(self) -> None:
        raise SessionRevokedError()


def _through_parameter(service: _Service) -> None:
    service.run()


def _invisible(callback: Any) -> None:
    callback()  # nothing to read here


@raises(InvalidCredentialsError, _helper)
def _declared(callback: Any) -> None:
    _invisible(callback)


@pytest.fixture
def analysed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read this module's functions too (only the app's are, normally), with a fresh cache."""
    monkeypatch.setattr(raises_module, "PACKAGES", ("app", "tests"))
    monkeypatch.setattr(raises_module, "_cache", {})


@pytest.mark.usefixtures("analysed_here")
class TestRaisesAnalysis:
    def test_calls_are_followed(self) -> None:
        assert errors_of(_helper) == {_Missing}

    def test_a_caught_error_is_replaced_by_what_the_handler_raises(self) -> None:
        assert errors_of(_translating) == {_Clash}

    def test_a_bare_raise_keeps_what_was_caught(self) -> None:
        assert errors_of(_reraising) == {_Missing}

    def test_methods_of_self_and_of_annotated_parameters(self) -> None:
        assert errors_of(_Service().run) == {SessionRevokedError}
        assert errors_of(_through_parameter) == {SessionRevokedError}

    def test_declared_errors_and_functions(self) -> None:
        assert errors_of(_declared) == {InvalidCredentialsError, _Missing}


def test_token_endpoint_documents_rfc6749_errors(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    responses = document["paths"][f"{API}/auth/token"]["post"]["responses"]
    bad = schemas[responses["400"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert bad["required"] == ["error", "error_description", "detail", "code"]
    assert bad["properties"]["error"]["enum"] == ["invalid_grant", "invalid_request", "unsupported_grant_type"]
    assert {"invalid_credentials", "inactive_user", "refresh_token_reused"} <= set(bad["properties"]["code"]["enum"])
    client = schemas[responses["401"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert client["properties"]["error"]["enum"] == ["invalid_client"]
    form = document["paths"][f"{API}/auth/token"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in form


@pytest.fixture(scope="module")
def documented_app() -> Documented:
    return documented(create_app(Settings(_env_file=None, ENVIRONMENT="test", SECRET_KEY="x" * 40)))


class TestDriftCheck:
    """tests/documented.py, which every test client runs on every error answer."""

    def test_a_documented_answer_passes(self, documented_app: Documented) -> None:
        assert documented_app.problem("POST", f"{API}/auth/register", 409, "email_taken") is None
        assert documented_app.problem("GET", f"{API}/organizations/{uuid.uuid4()}", 404, "org_not_found") is None

    def test_an_undocumented_code_fails(self, documented_app: Documented) -> None:
        problem = documented_app.problem("POST", f"{API}/auth/register", 409, "last_owner")
        assert problem is not None and "last_owner" in problem and "email_taken" in problem

    def test_an_undocumented_status_fails(self, documented_app: Documented) -> None:
        problem = documented_app.problem("GET", f"{API}/health/nothing", 404, "not_found")
        assert problem is None  # no operation: the router's own 404
        problem = documented_app.problem("POST", f"{API}/auth/register", 402, "insufficient_credits")
        assert problem is not None and "402" in problem

    def test_the_most_literal_path_wins(self, documented_app: Documented) -> None:
        operation = documented_app.operation("GET", f"{API}/users/me")
        assert operation is not None and operation.path == f"{API}/users/me"
