"""OpenAPI ``responses=`` for the error answers, so that generated clients know every ``code`` shape.

``responses(401, EmailTakenError, 422)`` documents each error answer a route can give with the ``ErrorRead``
body ``{"detail", "code"}``. Pass a status number for the generic answer of that status, or a domain error
class (a subclass of a category in ``app.core.errors``): its status comes from that category, and its
``code`` is listed in the response's description and given as an example, so a frontend sees which codes to
handle. Several classes of one status are merged into one response. 422 keeps FastAPI's own validation
schema (``HTTPValidationError``); every route also documents 429 (a default rate limit applies everywhere).
"""

from __future__ import annotations

from typing import Any

from app.core.errors import STATUS, AppError
from app.core.schemas import ErrorRead

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated (missing, invalid, expired or revoked credentials)",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Not found, or not visible to the caller",
    409: "Conflict",
    413: "Body too large",
    415: "The body is not JSON",
    429: "Rate limited (see the Retry-After header)",
    503: "A dependency is unavailable (see the Retry-After header)",
}

# Codes that an answer of this status carries whatever the route; listed when the status is passed as a number.
_GENERIC_CODES: dict[int, tuple[str, ...]] = {
    401: ("not_authenticated", "invalid_token", "token_expired", "session_revoked", "inactive_user"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    429: ("rate_limited",),
    503: ("database_unavailable",),
}

ALWAYS = (429,)

Answer = int | type[AppError]


def status_for(error: type[AppError]) -> int:
    """The HTTP status of a domain error class (the one in ``app.core.errors.STATUS`` for its category)."""
    return next((status for category, status in STATUS.items() if issubclass(error, category)), 500)


def _describe(status: int, codes: list[str], generic: bool) -> str:
    text = _DESCRIPTIONS.get(status, "Error")
    if not codes:
        return text
    listed = ", ".join(f"`{code}`" for code in codes)
    return f"{text}. `code`: {'for example ' if generic and status == 401 else ''}{listed}"


def responses(*answers: Answer) -> dict[int | str, dict[str, Any]]:
    by_status: dict[int, list[type[AppError]]] = {}
    numbers: set[int] = set(ALWAYS)
    for answer in answers:
        if isinstance(answer, int):
            numbers.add(answer)
        else:
            by_status.setdefault(status_for(answer), []).append(answer)
    result: dict[int | str, dict[str, Any]] = {}
    for status in sorted(numbers | set(by_status)):
        if status == 422:
            continue  # FastAPI documents its own validation answer
        errors = by_status.get(status, [])
        generic = not errors
        codes = list(dict.fromkeys(error.code for error in errors)) or list(_GENERIC_CODES.get(status, ()))
        entry: dict[str, Any] = {"model": ErrorRead, "description": _describe(status, codes, generic)}
        if errors:
            examples = {
                error.code: {"summary": error.code, "value": {"detail": error.detail, "code": error.code}}
                for error in errors
            }
            entry["content"] = {"application/json": {"examples": examples}}
        result[status] = entry
    return result
