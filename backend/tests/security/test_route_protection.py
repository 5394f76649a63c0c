"""Every route under /api/v1 needs a token except the few that start or restore a session.

Routers declare the caller through their handlers' parameters (``CurrentUser``, a membership or superuser
dependency), not a router-wide dependency solved a second time on each request; this sweep is the net that
catches a route which forgot it.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app.auth.dependencies import current_principal
from app.core.openapi import path_operations

PUBLIC = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/verify-email/confirm"),
    ("POST", "/api/v1/auth/password-reset/request"),
    ("POST", "/api/v1/auth/password-reset/confirm"),
    ("POST", "/api/v1/auth/mfa/verify"),  # the second step of a login: the mfa_token is its credential
}

# Work with or without an access token (the token, when sent, must be valid): they refuse an empty body with 422.
OPTIONAL_TOKEN = {("POST", "/api/v1/users/me/email/confirm")}


def _api_operations(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in path_operations(app)
        if route.path.startswith("/api/v1/")
        for method in route.methods
    )


def test_the_public_operations_are_exactly_these(app: FastAPI) -> None:
    schema = app.openapi()
    unsecured = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in operations.items()
        if not operation.get("security")
    }
    assert unsecured == PUBLIC


@pytest.mark.asyncio
async def test_every_other_operation_refuses_a_request_without_a_token(app: FastAPI, client: httpx.AsyncClient) -> None:
    protected = [op for op in _api_operations(app) if op not in PUBLIC | OPTIONAL_TOKEN]
    assert len(protected) > 30  # a sweep that found nothing would prove nothing
    for method, path in protected:
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        response = await client.request(method, url, json={} if method in {"POST", "PUT", "PATCH"} else None)
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
        assert response.json()["code"], (method, path)


def test_the_caller_is_one_dependency_documented_as_the_one_bearer_scheme(app: FastAPI) -> None:
    # The bearer scheme resolves the caller itself (app/auth/dependencies.py): FastAPI solves no second level.
    me = next(r for r in path_operations(app) if r.path == "/api/v1/users/me" and "GET" in r.methods)
    (caller,) = me.dependant.dependencies
    assert caller.call is current_principal  # the principal: /users/me also shows the caller's aal
    assert caller.dependencies == []
    assert list(app.openapi()["components"]["securitySchemes"]) == ["OAuth2PasswordBearer"]
