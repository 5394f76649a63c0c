"""Generic OAuth2 clients against the live API (uvicorn on a free loopback port): Authlib (httpx) and
requests-oauthlib sign in with the password grant, raise their own error for a wrong password, and refresh by
themselves (refresh_token grant) once the access token has expired."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from fastapi import FastAPI
from oauthlib.oauth2 import InvalidGrantError, LegacyApplicationClient
from requests_oauthlib import OAuth2Session

from tests.core.uvicorn_server import uvicorn_server
from tests.factories import DEFAULT_PASSWORD

CLIENT_ID = "generic-oauth2-client"  # any id: every client is public


@pytest.fixture(scope="module")
def api_url(database_url: str) -> Iterator[str]:
    with uvicorn_server(database_url) as url:
        yield url


@pytest.fixture
def account(api_url: str, app: FastAPI) -> dict[str, str]:
    """A registered own account (``app`` is requested so that the rows are cleaned after the test)."""
    email = f"oauth2-{uuid.uuid4().hex[:8]}@example.com"
    response = httpx.post(f"{api_url}/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 201, response.text
    return {"email": email, "password": DEFAULT_PASSWORD}


def expired(token: dict[str, Any]) -> dict[str, Any]:
    return {**token, "expires_at": int(time.time()) - 60}


class TestAuthlib:
    def test_password_grant_then_refresh_by_itself(self, api_url: str, account: dict[str, str]) -> None:
        token_url = f"{api_url}/api/v1/auth/token"
        updates: list[dict[str, Any]] = []
        with OAuth2Client(
            client_id=CLIENT_ID, token_endpoint=token_url, update_token=lambda token, **_: updates.append(token)
        ) as client:
            token = client.fetch_token(token_url, username=account["email"], password=account["password"])
            assert token["token_type"].lower() == "bearer" and token["refresh_token"]
            assert client.get(f"{api_url}/api/v1/users/me").json()["email"] == account["email"]

            client.token = expired(token)
            me = client.get(f"{api_url}/api/v1/users/me")  # Authlib refreshes first: the token has expired
            assert me.status_code == 200
            assert len(updates) == 1 and updates[0]["refresh_token"] != token["refresh_token"]
            assert client.token["access_token"] == updates[0]["access_token"] != token["access_token"]

    def test_wrong_password_raises(self, api_url: str, account: dict[str, str]) -> None:
        token_url = f"{api_url}/api/v1/auth/token"
        with OAuth2Client(client_id=CLIENT_ID, token_endpoint=token_url) as client, pytest.raises(OAuthError) as raised:
            client.fetch_token(token_url, username=account["email"], password="Wrong-Password-42")
        assert raised.value.error == "invalid_grant"
        assert raised.value.description == "Incorrect email or password."


class TestRequestsOAuthlib:
    @pytest.fixture(autouse=True)
    def _plain_http(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is http on loopback

    def test_password_grant_then_refresh_by_itself(self, api_url: str, account: dict[str, str]) -> None:
        token_url = f"{api_url}/api/v1/auth/token"
        updates: list[dict[str, Any]] = []
        with OAuth2Session(
            client=LegacyApplicationClient(client_id=CLIENT_ID),
            auto_refresh_url=token_url,
            auto_refresh_kwargs={"client_id": CLIENT_ID},
            token_updater=updates.append,
        ) as session:
            token = session.fetch_token(token_url, username=account["email"], password=account["password"])
            assert token["refresh_token"]
            assert session.get(f"{api_url}/api/v1/users/me").json()["email"] == account["email"]

            session.token = expired(token)
            me = session.get(f"{api_url}/api/v1/users/me")  # TokenExpiredError inside: refreshed, then sent
            assert me.status_code == 200
            assert len(updates) == 1 and updates[0]["refresh_token"] != token["refresh_token"]
            assert session.token["access_token"] == updates[0]["access_token"] != token["access_token"]

    def test_wrong_password_raises(self, api_url: str, account: dict[str, str]) -> None:
        token_url = f"{api_url}/api/v1/auth/token"
        session = OAuth2Session(client=LegacyApplicationClient(client_id=CLIENT_ID))
        with session, pytest.raises(InvalidGrantError) as raised:
            session.fetch_token(token_url, username=account["email"], password="Wrong-Password-42")
        assert raised.value.description == "Incorrect email or password."
