"""The committed frontend-contract/openapi.json is what the app produces, and it makes a good client."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest

from app.contract import REGENERATE_COMMAND, build_openapi, render

REPO_DIR = Path(__file__).resolve().parents[3]
COMMITTED = REPO_DIR / "frontend-contract" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ROOT_PATHS = {"/health", "/health/live"}
# Answers whose body is not an error by design: /health's 503 is the health report with "status": "degraded".
NON_ERROR_BODIES = {("/health", "get", "503"): "#/components/schemas/HealthRead"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


class TestCommittedDocument:
    def test_matches_the_app(self, document: dict[str, Any]) -> None:
        expected = render(document)
        current = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
        if current != expected:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        expected.splitlines(keepends=True),
                        "frontend-contract/openapi.json (committed)",
                        "what the app produces",
                        n=2,
                    )
                )[:60]
            )
            pytest.fail(
                f"frontend-contract/openapi.json is out of date. Run `{REGENERATE_COMMAND}` from the repository "
                f"root (it also regenerates frontend-contract/src/schema.d.ts) and commit both.\n{diff}"
            )

    def test_generation_is_deterministic(self, document: dict[str, Any]) -> None:
        assert render(build_openapi()) == render(document)


class TestOperations:
    def test_every_operation_has_a_unique_operation_id(self, document: dict[str, Any]) -> None:
        ids = [operation.get("operationId") for _, _, operation in operations(document)]
        missing = [f"{method.upper()} {path}" for path, method, op in operations(document) if not op.get("operationId")]
        assert missing == []
        assert len(ids) == len(set(ids)), sorted(str(i) for i in ids if ids.count(i) > 1)

    def test_operation_ids_are_kebab_case_with_a_domain_prefix(self, document: dict[str, Any]) -> None:
        bad = [
            op["operationId"]
            for _, _, op in operations(document)
            if not op["operationId"].replace("-", "").isalnum()
            or op["operationId"] != op["operationId"].lower()
            or "-" not in op["operationId"]
        ]
        assert bad == []

    def test_error_answers_name_their_codes(self, document: dict[str, Any]) -> None:
        """Every error answer's schema has a ``code`` enum: the operation's own codes for that status."""
        schemas = document["components"]["schemas"]
        wrong = []
        for path, method, operation in operations(document):
            for status, answer in operation["responses"].items():
                if status.startswith("2"):
                    continue
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                if (path, method, status) in NON_ERROR_BODIES:
                    assert ref == NON_ERROR_BODIES[(path, method, status)]
                    continue
                name = ref.rsplit("/", 1)[-1]
                if status == "422":
                    ok = name == "HTTPValidationError"
                else:
                    code = schemas.get(name, {}).get("properties", {}).get("code", {})
                    ok = bool(code.get("enum")) and schemas[name]["required"][-2:] == ["detail", "code"]
                if not ok:
                    wrong.append(f"{method.upper()} {path} {status}: {ref}")
        assert wrong == []

    def test_protected_operations_document_401(self, document: dict[str, Any]) -> None:
        missing = [
            f"{method.upper()} {path}"
            for path, method, operation in operations(document)
            if operation.get("security") and "401" not in operation["responses"]
        ]
        assert missing == []

    def test_operations_document_their_success_answer(self, document: dict[str, Any]) -> None:
        missing = [
            f"{method.upper()} {path}"
            for path, method, operation in operations(document)
            if not any(status.startswith("2") for status in operation["responses"])
        ]
        assert missing == []


class TestPaths:
    def test_everything_is_under_api_v1_except_health(self, document: dict[str, Any]) -> None:
        outside = [path for path in document["paths"] if not path.startswith("/api/v1/") and path not in ROOT_PATHS]
        assert outside == []

    def test_schemas_are_named(self, document: dict[str, Any]) -> None:
        """Request and response bodies refer to named schemas, so a generated client has names for them."""
        inline = []
        for path, method, operation in operations(document):
            bodies = [("request", operation.get("requestBody", {})), *operation["responses"].items()]
            for where, body in bodies:
                for media, content in body.get("content", {}).items():
                    schema = content.get("schema", {})
                    target = schema.get("items", schema) if schema.get("type") == "array" else schema
                    # An optional body is `anyOf: [{"$ref": ...}, {"type": "null"}]`: still named.
                    variants = [v for v in target.get("anyOf", [target]) if v.get("type") != "null"]
                    if media.endswith("json") and target and not all("$ref" in v for v in variants):
                        inline.append(f"{method.upper()} {path} {where}: {schema}")
        assert inline == []
