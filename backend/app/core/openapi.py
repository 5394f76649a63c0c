"""The OpenAPI document's error answers, collected from the code, so that a generated client knows every one.

For each operation, ``operation_errors`` walks the route's endpoint and its whole dependency tree (FastAPI's
``Dependant``) through ``app.core.raises.errors_of``: every domain error that code can raise, with the status
of its category (``app.core.errors.STATUS``). Added to that, what the framework answers on its own:

- 429 ``rate_limited`` and 503 ``database_unavailable`` on every operation under the API prefix (the rate-limit
  middleware, a lost database);
- 413 ``payload_too_large`` where the operation takes a body, 415 ``unsupported_media_type`` where it is JSON;
- 422 in FastAPI's validation shape, with ``code`` (``validation_error``, ``invalid_json``) declared.

Each (operation, status) gets a schema of its own, ``{OperationId}{status}Error``, whose ``code`` is the enum of
exactly the codes that operation can answer with that status, each with an example. ``ErrorRead`` remains the
shape of any error (its ``code`` is ``ErrorCode``, the enum of every code). Rate-limit headers are declared on
the answers that carry them (``X-RateLimit-*`` on successes, ``Retry-After`` on 429 and 503,
``WWW-Authenticate`` on 401).

``install_openapi(app)`` computes the table when the app is built, and adds it to the document FastAPI
generates. ``path_operations(app)`` is the one walk over the app's operations (this table, and the tests that
sweep every route). The drift test (tests/conftest.py) checks every error answer the test suite sees against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from app.core.errors import (
    STATUS,
    AppError,
    DatabaseUnavailable,
    FieldError,
    OAuth2Error,
    TooManyRequests,
)
from app.core.raises import errors_of
from app.core.schemas import ErrorRead

VALIDATION_CODES = ("validation_error", "invalid_json")
FRAMEWORK_CODES = ("not_found", "method_not_allowed", "internal_error", "bad_request")
PAYLOAD_TOO_LARGE = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"

_INTEGER = {"type": "integer", "minimum": 0}
# components.headers: referred to by every answer that carries them.
HEADERS: dict[str, dict[str, Any]] = {
    "X-RateLimit-Limit": {
        "description": "Requests allowed in the current window of the tightest limit (absent when limits are off).",
        "schema": _INTEGER,
        "required": False,
    },
    "X-RateLimit-Remaining": {"description": "Requests left in that window.", "schema": _INTEGER, "required": False},
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": _INTEGER, "required": True},
    "WWW-Authenticate": {
        "description": "The authentication scheme to use (`Bearer`).",
        "schema": {"type": "string"},
        "required": True,
    },
}


def status_for(error: type[AppError]) -> int:
    """The HTTP status of a domain error class (the one in ``app.core.errors.STATUS`` for its category)."""
    return next((status for category, status in STATUS.items() if issubclass(error, category)), 500)


@dataclass(frozen=True)
class Code:
    """One ``code`` an operation can answer with a status: its default detail and, for OAuth2 answers, ``error``."""

    code: str
    detail: str
    oauth_error: str | None = None


@dataclass
class OperationErrors:
    """status -> the codes an operation can answer with it (422: the validation codes)."""

    by_status: dict[int, dict[str, Code]] = field(default_factory=dict)

    def add(self, status: int, code: Code) -> None:
        self.by_status.setdefault(status, {}).setdefault(code.code, code)

    def codes(self, status: int) -> list[str]:
        return sorted(self.by_status.get(status, {}))


@dataclass(frozen=True)
class PathOperation:
    """One path operation as the app serves it: the prefix, dependencies and schema flag of its router's
    inclusion merged in."""

    path: str  # the template, /api/v1/organizations/{org_id}
    methods: frozenset[str]
    endpoint: Callable[..., Any]
    dependant: Dependant  # the endpoint's parameters and every dependency, the inclusion's included
    include_in_schema: bool


def path_operations(app: FastAPI) -> list[PathOperation]:
    """Every path operation of ``app``, in matching order. ``app.routes`` holds each included router as one node
    (FastAPI >= 0.137, ``include_router``); ``iter_route_contexts`` is FastAPI's public walk through them, the one
    its OpenAPI generation uses."""
    found: list[PathOperation] = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            assert context.path_format is not None and context.endpoint is not None  # an APIRoute's, always
            found.append(
                PathOperation(
                    path=context.path_format,
                    methods=frozenset(context.methods or ()),
                    endpoint=context.endpoint,
                    dependant=context.dependant,
                    include_in_schema=context.include_in_schema,
                )
            )
    return found


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def raised_by(route: PathOperation) -> frozenset[type[AppError]]:
    """Every domain error the endpoint of ``route`` and its dependencies can raise."""
    found: set[type[AppError]] = set()
    for dependant in _dependants(route.dependant):
        if dependant.call is not None:
            found |= errors_of(dependant.call)
    return frozenset(found)


def _code(error: type[AppError]) -> Code:
    oauth = error.error if issubclass(error, OAuth2Error) else None
    return Code(error.code, error.detail, oauth)


def _body_kind(route: PathOperation) -> str | None:
    body = [param for dependant in _dependants(route.dependant) for param in dependant.body_params]
    if not body:
        return None
    return "form" if any(isinstance(param.field_info, params.Form) for param in body) else "json"


def operation_errors(route: PathOperation, api_prefix: str) -> OperationErrors:
    answers = OperationErrors()
    for error in sorted(raised_by(route), key=lambda e: (e.code, e.__qualname__)):
        answers.add(422 if issubclass(error, FieldError) else status_for(error), _code(error))
    if route.path.startswith(api_prefix + "/"):
        answers.add(429, _code(TooManyRequests))
        answers.add(503, _code(DatabaseUnavailable))
    kind = _body_kind(route)
    if kind is not None:
        answers.add(413, Code(PAYLOAD_TOO_LARGE, "The request body is too large."))
    if kind == "json":
        answers.add(415, Code(UNSUPPORTED_MEDIA_TYPE, "Send the body as JSON (Content-Type: application/json)."))
        answers.add(422, Code("invalid_json", "The body is not valid JSON."))
    # FastAPI validates (422) whatever an operation or its dependencies take from the request.
    if any(
        d.path_params or d.query_params or d.header_params or d.cookie_params or d.body_params
        for d in _dependants(route.dependant)
    ):
        answers.add(422, Code("validation_error", "A field is missing or invalid (see `detail`)."))
    return answers


def error_table(app: FastAPI, api_prefix: str) -> dict[tuple[str, str], OperationErrors]:
    """(path, method) -> the error answers of every documented operation."""
    table: dict[tuple[str, str], OperationErrors] = {}
    for route in path_operations(app):
        if route.include_in_schema:
            answers = operation_errors(route, api_prefix)
            for method in route.methods:
                table[(route.path, method.lower())] = answers
    return table


def _pascal(operation_id: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in operation_id.replace("_", "-").split("-") if part)


def _schema_name(operation_id: str, status: int, codes: dict[str, Code]) -> str:
    """One code: that code's schema, shared by every operation (``EmailTakenError``); several: the operation's
    own for that status (``AuthLogin401Error``). A code always has the same status, so one name means one schema."""
    if len(codes) == 1 and not any(code.oauth_error for code in codes.values()):
        return f"{_pascal(next(iter(codes)))}Error"
    return f"{_pascal(operation_id)}{status}Error"


def _describe(status: int, codes: dict[str, Code]) -> str:
    phrase = HTTPStatus(status).phrase
    listed = ", ".join(f"`{code}`" for code in sorted(codes))
    return f"{phrase}. `code`: {listed}" if listed else phrase


def _error_schema(name: str, status: int, codes: dict[str, Code]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "detail": {"type": "string", "title": "Detail", "description": "Human-readable; do not match on it."},
        "code": {
            "type": "string",
            "enum": sorted(codes),
            "title": "Code",
            "description": "Machine-readable reason: branch on this.",
        },
    }
    required = ["detail", "code"]
    oauth = sorted({code.oauth_error for code in codes.values() if code.oauth_error})
    if oauth:
        properties = {
            "error": {"type": "string", "enum": oauth, "title": "Error", "description": "The RFC 6749 error code."},
            "error_description": {"type": "string", "title": "Error Description"},
            **properties,
        }
        if all(code.oauth_error for code in codes.values()):
            required = ["error", "error_description", *required]
    only = next(iter(codes.values())) if len(codes) == 1 else None
    return {
        "title": name,
        "type": "object",
        "description": only.detail if only else f"{HTTPStatus(status).phrase} ({status}).",
        "properties": properties,
        "required": required,
    }


def _example(code: Code) -> dict[str, Any]:
    value: dict[str, Any] = {"detail": code.detail, "code": code.code}
    if code.oauth_error:
        value = {"error": code.oauth_error, "error_description": code.detail, **value}
    return {"summary": code.code, "value": value}


def _header(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/headers/{name}"}


def _headers(status: int, prefixed: bool) -> dict[str, Any]:
    """The headers an answer of this status carries: X-RateLimit-* on successes (while limits are on) and 429s,
    Retry-After on 429 and 503, WWW-Authenticate on 401."""
    names: list[str] = []
    if prefixed and (200 <= status < 300 or status == 429):
        names += ["X-RateLimit-Limit", "X-RateLimit-Remaining"]
    if status in (429, 503):
        names.append("Retry-After")
    if status == 401:
        names.append("WWW-Authenticate")
    return {name: _header(name) for name in names}


def add_error_answers(document: dict[str, Any], table: dict[tuple[str, str], OperationErrors], prefix: str) -> None:
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    every_code: set[str] = set(FRAMEWORK_CODES) | set(VALIDATION_CODES)
    validation_codes: set[str] = set(VALIDATION_CODES)
    for (path, method), answers in sorted(table.items()):
        operation = document["paths"][path][method]
        responses: dict[str, Any] = operation["responses"]
        prefixed = path.startswith(prefix + "/")
        for status_text, response in responses.items():
            if status_text.isdigit() and 200 <= int(status_text) < 300:
                headers = _headers(int(status_text), prefixed)
                if headers:
                    response.setdefault("headers", {}).update(headers)
        for status, codes in sorted(answers.by_status.items()):
            every_code |= set(codes)
            if status == 422:
                validation_codes |= set(codes)
                entry = responses.setdefault("422", {"description": "Validation Error"})
                entry["description"] = _describe(422, codes)
                entry["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
                }
                continue
            name = _schema_name(operation["operationId"], status, codes)
            schemas[name] = _error_schema(name, status, codes)
            entry = {
                "description": _describe(status, codes),
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{name}"},
                        "examples": {code.code: _example(code) for code in codes.values()},
                    }
                },
            }
            headers = _headers(status, prefixed)
            if headers:
                entry["headers"] = headers
            responses[str(status)] = entry
        operation["responses"] = dict(sorted(responses.items()))
    if "HTTPValidationError" in schemas:
        validation = schemas["HTTPValidationError"]
        validation["properties"]["code"] = {
            "type": "string",
            "enum": sorted(validation_codes),
            "title": "Code",
            "description": "`validation_error` (see `detail`: each item's `loc` names the field), `invalid_json`.",
        }
        validation["required"] = ["detail", "code"]
    error_read = ErrorRead.model_json_schema()
    error_read["properties"]["code"] = {"$ref": "#/components/schemas/ErrorCode"}
    schemas["ErrorRead"] = error_read
    schemas["ErrorCode"] = {
        "title": "ErrorCode",
        "type": "string",
        "enum": sorted(every_code),
        "description": "Every `code` an error answer of this API can carry; each operation lists its own.",
    }
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    document["components"]["headers"] = HEADERS


def install_openapi(app: FastAPI, api_prefix: str) -> None:
    """Collect every operation's error answers now (app build time), and add them to the generated document."""
    table = error_table(app, api_prefix)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            add_error_answers(document, table, api_prefix)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
