"""POST /auth/token speaks RFC 6749 (section 4.3 password grant, section 6 refresh, section 5.2 errors)."""

from __future__ import annotations

import base64

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import AppFactory, client_for
from tests.factories import DEFAULT_PASSWORD, create_user

pytestmark = pytest.mark.asyncio

TOKEN = "/api/v1/auth/token"


def password_grant(email: str, password: str = DEFAULT_PASSWORD, **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": password, **extra}


def assert_oauth_error(response: httpx.Response, status: int, error: str, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["code"] == code
    assert body["error_description"] == body["detail"] and body["detail"]


class TestPasswordGrant:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        response = await client.post(TOKEN, data=password_grant(user.email, client_id="any-public-client"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "bearer" and body["expires_in"] > 0
        assert body["access_token"] and body["refresh_token"]
        assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200

    async def test_wrong_password_is_invalid_grant(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        response = await client.post(TOKEN, data=password_grant(user.email, "Wrong-Password-42"))
        assert_oauth_error(response, 400, "invalid_grant", "invalid_credentials")

    async def test_unknown_email_is_the_same_answer(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data=password_grant("nobody@example.com"))
        assert_oauth_error(response, 400, "invalid_grant", "invalid_credentials")

    async def test_inactive_user_is_invalid_grant(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False, is_active=False)
        response = await client.post(TOKEN, data=password_grant(user.email))
        assert_oauth_error(response, 400, "invalid_grant", "inactive_user")

    async def test_missing_password_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data={"grant_type": "password", "username": "a@example.com"})
        assert_oauth_error(response, 400, "invalid_request", "invalid_request")


class TestRefreshGrant:
    async def test_rotates(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": user.refresh_token})
        assert response.status_code == 200, response.text
        assert response.json()["refresh_token"] != user.refresh_token
        assert response.json()["session_id"] == str(user.session_id)

    async def test_reused_token_is_invalid_grant(self, make_app: AppFactory) -> None:
        application = await make_app(REFRESH_REUSE_GRACE_SECONDS=0)
        user = await create_user(application)
        form = {"grant_type": "refresh_token", "refresh_token": user.refresh_token}
        async with client_for(application) as client:
            assert (await client.post(TOKEN, data=form)).status_code == 200
            assert_oauth_error(await client.post(TOKEN, data=form), 400, "invalid_grant", "refresh_token_reused")

    async def test_garbage_is_invalid_grant(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "nope"})
        assert_oauth_error(response, 400, "invalid_grant", "invalid_refresh_token")

    async def test_missing_token_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data={"grant_type": "refresh_token"})
        assert_oauth_error(response, 400, "invalid_request", "invalid_request")


class TestRequest:
    async def test_grant_type_is_required(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data={"username": "a@example.com", "password": DEFAULT_PASSWORD})
        assert_oauth_error(response, 400, "invalid_request", "invalid_request")

    async def test_unsupported_grant_type(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, data={"grant_type": "client_credentials"})
        assert_oauth_error(response, 400, "unsupported_grant_type", "unsupported_grant_type")

    async def test_a_json_body_is_invalid_request(self, client: httpx.AsyncClient) -> None:
        response = await client.post(TOKEN, json={"grant_type": "password"})
        assert_oauth_error(response, 400, "invalid_request", "invalid_request")


class TestClientAuthentication:
    async def test_a_client_secret_is_invalid_client(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        response = await client.post(TOKEN, data=password_grant(user.email, client_id="c", client_secret="s"))
        assert_oauth_error(response, 401, "invalid_client", "invalid_client")
        assert response.headers["www-authenticate"].startswith("Basic")

    async def test_basic_credentials_with_a_secret_are_invalid_client(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        user = await create_user(app, logged_in=False)
        basic = base64.b64encode(b"client:secret").decode()
        response = await client.post(
            TOKEN, data=password_grant(user.email), headers={"Authorization": f"Basic {basic}"}
        )
        assert_oauth_error(response, 401, "invalid_client", "invalid_client")

    async def test_a_public_client_in_basic_credentials_is_fine(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """Some clients send a public client's id as Basic credentials with an empty secret."""
        user = await create_user(app, logged_in=False)
        basic = base64.b64encode(b"public-client:").decode()
        response = await client.post(
            TOKEN, data=password_grant(user.email), headers={"Authorization": f"Basic {basic}"}
        )
        assert response.status_code == 200, response.text
