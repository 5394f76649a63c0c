"""The caller's dependency is itself the bearer scheme (a subclass of FastAPI's OAuth2PasswordBearer, kept for what
it measured: docs/SCALING.md "Framework internals, measured"). These fail when an upgrade of FastAPI changes what
the subclass relies on: how the scheme reads the header, and that OpenAPI documents one scheme for it."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.security import OAuth2PasswordBearer
from starlette.requests import Request

from app.auth.dependencies import current_principal, current_user, oauth2_scheme


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "token"), [("Bearer abc.def", "abc.def"), ("bearer abc", "abc"), ("Basic abc", None), (None, None)]
)
async def test_the_scheme_reads_the_bearer_token_as_fastapi_does(header: str | None, token: str | None) -> None:
    for scheme in (current_user, current_principal):
        assert isinstance(scheme, OAuth2PasswordBearer)
        assert await scheme.bearer_token(_request(header)) == token == await oauth2_scheme(_request(header))


def test_openapi_documents_one_scheme(app: FastAPI) -> None:
    schemes = app.openapi()["components"]["securitySchemes"]
    assert list(schemes) == [oauth2_scheme.scheme_name]
    assert current_user.scheme_name == current_principal.scheme_name == oauth2_scheme.scheme_name
