"""OpenAPI ``responses=`` for the error answers, so that generated clients know every ``code`` shape."""

from __future__ import annotations

from typing import Any

from app.core.schemas import ErrorRead

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Not authenticated (missing, invalid, expired or revoked credentials)",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Not found, or not visible to the caller",
    409: "Conflict",
    413: "Body too large",
    429: "Rate limited",
    503: "A dependency is unavailable",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorRead, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
        if status != 422
    }
