"""Error categories and the one place that maps them to HTTP answers.

Services raise domain errors (a category below plus a ``code``); only this module knows status numbers.
Every error body is ``{"detail": ..., "code": ...}``; 422 keeps FastAPI's validation shape and adds a code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("app.errors")


class AppError(Exception):
    code = "error"
    detail = "Request failed."
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.detail
        if headers is not None:
            self.headers = headers
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        """The answer's JSON body."""
        return {"detail": self.detail, "code": self.code}


class BadRequest(AppError):
    code, detail = "bad_request", "The request is invalid."


class Unauthenticated(AppError):
    code, detail = "not_authenticated", "Not authenticated."


class PaymentRequired(AppError):
    code, detail = "payment_required", "Payment required."


class Forbidden(AppError):
    code, detail = "forbidden", "You are not allowed to do this."


class NotFound(AppError):
    code, detail = "not_found", "Not found."


class Conflict(AppError):
    code, detail = "conflict", "The request conflicts with the current state."


class Unprocessable(AppError):
    code, detail = "unprocessable", "The request cannot be processed."


class FieldError(Unprocessable):
    """One field's value refused by a rule only the service can check (the password equal to the account's email):
    answered like FastAPI's own validation errors, under that field, so that a form shows it there."""

    code, detail = "validation_error", "The value is not accepted."
    error_type = "value_error"

    def __init__(self, detail: str | None = None, *, field: str, location: str = "body") -> None:
        super().__init__(detail)
        self.loc = [location, field]

    def body(self) -> dict[str, Any]:
        return {"detail": [{"type": self.error_type, "loc": self.loc, "msg": self.detail}], "code": self.code}


class OAuth2Error(AppError):
    """An RFC 6749 (section 5.2) error of the token endpoint: ``error`` and ``error_description`` for OAuth2
    clients, beside this API's ``detail`` and ``code``. Combined with a category (400 ``BadRequest``, 401
    ``Unauthenticated`` for client authentication), which gives the status."""

    error = "invalid_request"

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.detail, **super().body()}


class TooManyRequests(AppError):
    code, detail = "rate_limited", "Too many requests."


class ServiceUnavailable(AppError):
    code, detail = "service_unavailable", "A service this request needs is unavailable."


class DatabaseUnavailable(ServiceUnavailable):
    code, detail = "database_unavailable", "The database is unavailable; try again shortly."


STATUS: dict[type[AppError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    PaymentRequired: 402,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
    TooManyRequests: 429,
    ServiceUnavailable: 503,
}

# Codes for the framework's own HTTP errors (unknown route, wrong method, oversized body, ...).
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def status_of(exc: AppError) -> int:
    return next((status for cls, status in STATUS.items() if isinstance(exc, cls)), 500)


def error_response(
    status: int, detail: str, code: str, headers: dict[str, str] | None = None, *, body: Any = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    content = {"detail": detail, "code": code} if body is None else body
    return JSONResponse(content, status_code=status, headers=headers or None)


async def app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(status_of(exc), exc.detail, exc.code, exc.headers, body=jsonable_encoder(exc.body()))


def _undecodable_body(exc: StarletteHTTPException) -> bool:
    """FastAPI answers a JSON body it cannot decode at all (not UTF-8, nested too deep for the parser) with a
    bare 400; it is malformed JSON like any other and gets the same 422 ``invalid_json``."""
    return exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if _undecodable_body(exc):
        errors = [{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}]
        return JSONResponse({"detail": errors, "code": "invalid_json"}, status_code=422)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
    return error_response(exc.status_code, detail, code, dict(exc.headers or {}))


def _wrong_content_type(request: Request, errors: list[dict[str, Any]]) -> bool:
    """A JSON endpoint sent a body of another media type: FastAPI reports it as a non-object body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type or content_type == "application/json" or content_type.endswith("+json"):
        return False
    return any(
        tuple(err.get("loc", ())) == ("body",) and err.get("type") in {"model_attributes_type", "dict_type"}
        for err in errors
    )


def _json_error_only(errors: list[dict[str, Any]]) -> bool:
    return bool(errors) and all(err.get("type") == "json_invalid" for err in errors)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for err in errors:
        # Never echo back what could be a password: drop the offending input, keep the location.
        err.pop("input", None)
        ctx = err.get("ctx")
        if isinstance(ctx, dict):
            err["ctx"] = {
                key: value if isinstance(value, int | float | str) else str(value) for key, value in ctx.items()
            }
    if _wrong_content_type(request, errors):
        return error_response(415, "Send the body as JSON (Content-Type: application/json).", "unsupported_media_type")
    code = "invalid_json" if _json_error_only(errors) else "validation_error"
    return JSONResponse(
        {"detail": jsonable_encoder(errors), "code": code},
        status_code=422,
    )


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, OSError | ConnectionError | TimeoutError):
            return True
        name = type(orig).__name__ if orig is not None else ""
        text = str(orig).lower()
        return name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError"} or (
            "connection" in text and ("closed" in text or "refused" in text or "lost" in text)
        )
    return isinstance(exc, OSError) and exc.errno is not None


FOREIGN_KEY_VIOLATION = "23503"
USER_FOREIGN_KEY_SUFFIX = "_users"  # fk_<table>_<column>_users (core/db.py NAMING_CONVENTION)


def _user_vanished(exc: BaseException) -> bool:
    """A row referencing ``users`` could not be written because the user is gone: the caller's account was
    deleted while this request ran. Deleting an account locks the user's row (app/users/lifecycle.py), so such an
    insert waits for the deletion and then finds no user. Not a conflict of the request's own making, and no
    service can see it coming, so it is answered here, like a lost database: as the caller's ended session
    (401), never as a 500. PostgreSQL names the constraint; any other foreign-key violation stays a 500."""
    if not isinstance(exc, IntegrityError):
        return False
    cause: BaseException | None = exc.orig
    while cause is not None:
        name = getattr(cause, "constraint_name", None)
        if isinstance(name, str):
            state = getattr(cause, "sqlstate", None)
            return state == FOREIGN_KEY_VIOLATION and name.endswith(USER_FOREIGN_KEY_SUFFIX)
        cause = cause.__cause__
    return False


def unexpected_error_response(exc: BaseException, request_id: str) -> JSONResponse:
    """The answer to an exception no handler claimed: 503 for a lost database, 401 for a caller whose account
    was deleted meanwhile, else a logged 500."""
    if _is_connection_error(exc):
        logger.warning("database unavailable (request_id=%s): %s", request_id, type(exc).__name__)
        err = DatabaseUnavailable()
        return error_response(503, err.detail, err.code, {"Retry-After": "5"})
    if _user_vanished(exc):
        logger.info("the account this request wrote for was deleted meanwhile (request_id=%s)", request_id)
        return error_response(401, "This account no longer exists.", "session_revoked")
    logger.error("unhandled error (request_id=%s)", request_id, exc_info=exc)
    return error_response(500, "Internal server error", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    # Anything else is answered by RequestContextMiddleware (app.core.middleware), inside the
    # security-header layer, so that a 500 or 503 carries the same headers as every other answer.
