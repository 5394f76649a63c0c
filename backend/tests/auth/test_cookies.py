"""Browser-safe refresh (AUTH_REFRESH_COOKIE=true), through a client that keeps cookies like a browser."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from http.cookies import Morsel, SimpleCookie

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.auth.cookies import csrf_token_matches_session
from app.auth.models import AuthSession
from app.core import security
from app.state import state_of
from tests.conftest import AppFactory, client_for
from tests.factories import DEFAULT_PASSWORD, create_user

pytestmark = pytest.mark.asyncio

AUTH = "/api/v1/auth"
WEEK = 7 * 24 * 60 * 60


def set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    cookies: dict[str, Morsel[str]] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        cookies.update(parsed)
    return cookies


def jar_cookie(client: httpx.AsyncClient, name: str) -> str | None:
    values = [c for c in client.cookies.jar if c.name == name]
    assert len(values) <= 1
    return values[0].value if values else None


def replace_cookie(client: httpx.AsyncClient, name: str, value: str) -> None:
    [cookie] = [c for c in client.cookies.jar if c.name == name]
    client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    client.cookies.set(name, value, domain=cookie.domain, path=cookie.path)


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    value = jar_cookie(client, "csrf_token")
    assert value
    return {"X-CSRF-Token": value}


def session_of(body: dict[str, str]) -> uuid.UUID:
    parts = security.parse_refresh_token(body["refresh_token"])
    assert parts is not None
    return parts.session_id


async def generation(app: FastAPI, body: dict[str, str]) -> int:
    async with state_of(app).sessionmaker() as session:
        row = await session.get(AuthSession, session_of(body))
        assert row is not None
        value: int = row.generation
        return value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def cookie_app(make_app: AppFactory) -> FastAPI:
    return await make_app(AUTH_REFRESH_COOKIE=True)


@pytest_asyncio.fixture
async def browser(cookie_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(cookie_app) as c:
        yield c


async def login(client: httpx.AsyncClient, app: FastAPI) -> tuple[httpx.Response, dict[str, str]]:
    user = await create_user(app, logged_in=False)
    response = await client.post(f"{AUTH}/login", json={"email": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 200, response.text
    return response, response.json()


async def session_alive(client: httpx.AsyncClient, access_token: str) -> bool:
    response = await client.get("/api/v1/users/me", headers=bearer(access_token))
    assert response.status_code in (200, 401)
    return response.status_code == 200


class TestCookieModeOff:
    async def test_no_set_cookie_anywhere(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        response, body = await login(client, app)
        assert "set-cookie" not in response.headers
        assert "x-csrf-token" not in response.headers
        user = await create_user(app, logged_in=False)
        token = await client.post(
            f"{AUTH}/token", data={"grant_type": "password", "username": user.email, "password": DEFAULT_PASSWORD}
        )
        assert token.status_code == 200
        assert "set-cookie" not in token.headers
        refreshed = await client.post(f"{AUTH}/refresh", json={"refresh_token": body["refresh_token"]})
        assert refreshed.status_code == 200
        assert "set-cookie" not in refreshed.headers
        logout = await client.post(f"{AUTH}/logout", headers=bearer(refreshed.json()["access_token"]))
        assert logout.status_code == 204
        assert "set-cookie" not in logout.headers

    async def test_cookies_sent_by_a_client_are_ignored(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        _, body = await login(client, app)
        client.cookies.set("refresh_token", body["refresh_token"])
        client.cookies.set("csrf_token", "x")
        response = await client.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": "x"})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"
        logout = await client.post(f"{AUTH}/logout", headers={"X-CSRF-Token": "x"})
        assert logout.status_code == 401
        assert await session_alive(client, body["access_token"])


class TestLoginCookies:
    async def test_sets_refresh_and_csrf_cookies(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        response, body = await login(browser, cookie_app)
        cookies = set_cookies(response)
        refresh = cookies["refresh_token"]
        assert refresh.value == body["refresh_token"]  # the body keeps it too
        assert refresh["httponly"] is True
        assert refresh["samesite"].lower() == "strict"
        assert refresh["path"] == "/api/v1/auth"
        assert refresh["max-age"] == str(WEEK)
        assert not refresh["secure"]  # not production: plain http works in development
        token = cookies["csrf_token"]
        assert not token["httponly"]  # the SPA reads it
        assert token["samesite"].lower() == "strict"
        assert token["path"] == "/"
        assert token["max-age"] == str(WEEK)
        assert response.headers["x-csrf-token"] == token.value
        assert len(token.value) >= 32
        assert csrf_token_matches_session(state_of(cookie_app).settings, token.value, session_of(body))
        assert response.headers["cache-control"] == "no-store"

    async def test_token_form_sets_cookies(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        user = await create_user(cookie_app, logged_in=False)
        response = await browser.post(
            f"{AUTH}/token", data={"grant_type": "password", "username": user.email, "password": DEFAULT_PASSWORD}
        )
        assert response.status_code == 200
        assert set(set_cookies(response)) == {"refresh_token", "csrf_token"}

    async def test_refresh_cookie_only_sent_to_auth_paths(
        self, browser: httpx.AsyncClient, cookie_app: FastAPI
    ) -> None:
        await login(browser, cookie_app)
        request = browser.build_request("GET", "/api/v1/users/me")
        browser.cookies.set_cookie_header(request)
        assert "refresh_token=" not in request.headers.get("cookie", "")
        assert "csrf_token=" in request.headers.get("cookie", "")
        request = browser.build_request("POST", f"{AUTH}/refresh")
        browser.cookies.set_cookie_header(request)
        assert "refresh_token=" in request.headers["cookie"]

    async def test_secure_in_production(self, make_app: AppFactory) -> None:
        application = await make_app(AUTH_REFRESH_COOKIE=True, ENVIRONMENT="production")
        async with client_for(application) as c:
            response, _ = await login(c, application)
        cookies = set_cookies(response)
        assert cookies["refresh_token"]["secure"] is True
        assert cookies["csrf_token"]["secure"] is True
        assert cookies["refresh_token"]["httponly"] is True

    async def test_max_age_is_the_refresh_lifetime(self, make_app: AppFactory) -> None:
        application = await make_app(AUTH_REFRESH_COOKIE=True, REFRESH_TOKEN_EXPIRE_DAYS=3)
        async with client_for(application) as c:
            response, _ = await login(c, application)
        assert set_cookies(response)["refresh_token"]["max-age"] == str(3 * 24 * 60 * 60)

    async def test_failed_login_sets_no_cookie(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        user = await create_user(cookie_app, logged_in=False)
        response = await browser.post(f"{AUTH}/login", json={"email": user.email, "password": "wrong-password-1"})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers


class TestRefreshWithCookie:
    async def test_cookie_and_csrf_header_rotate(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/refresh", headers=csrf(browser))
        assert response.status_code == 200, response.text
        new = response.json()
        assert new["refresh_token"] != body["refresh_token"]
        assert jar_cookie(browser, "refresh_token") == new["refresh_token"]
        assert set(set_cookies(response)) == {"refresh_token", "csrf_token"}
        # the rotated cookie works again; the spent one is refused once the grace window is over
        again = await browser.post(f"{AUTH}/refresh", headers=csrf(browser))
        assert again.status_code == 200
        assert await session_alive(browser, again.json()["access_token"])

    async def test_without_csrf_header_403(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/refresh")
        assert response.status_code == 403
        assert response.json()["code"] == "csrf_failed"
        assert await generation(cookie_app, body) == 0  # nothing was rotated

    async def test_wrong_csrf_header_403(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": "guess"})
        assert response.status_code == 403
        assert response.json()["code"] == "csrf_failed"

    async def test_header_without_csrf_cookie_403(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        await login(browser, cookie_app)
        header = csrf(browser)
        browser.cookies.delete("csrf_token")
        response = await browser.post(f"{AUTH}/refresh", headers=header)
        assert response.status_code == 403

    async def test_csrf_pair_of_another_session_403(self, cookie_app: FastAPI) -> None:
        async with client_for(cookie_app) as alice, client_for(cookie_app) as mallory:
            await login(alice, cookie_app)
            await login(mallory, cookie_app)
            planted = jar_cookie(mallory, "csrf_token")
            assert planted
            replace_cookie(alice, "csrf_token", planted)  # e.g. set by a sibling subdomain
            response = await alice.post(f"{AUTH}/refresh", headers={"X-CSRF-Token": planted})
        assert response.status_code == 403
        assert response.json()["code"] == "csrf_failed"

    async def test_body_token_needs_no_csrf(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        browser.cookies.clear()
        response = await browser.post(f"{AUTH}/refresh", json={"refresh_token": body["refresh_token"]})
        assert response.status_code == 200
        assert set(set_cookies(response)) == {"refresh_token", "csrf_token"}

    async def test_no_token_anywhere_401(self, browser: httpx.AsyncClient) -> None:
        response = await browser.post(f"{AUTH}/refresh")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"

    async def test_tampered_cookie_401(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        token = body["refresh_token"]
        replace_cookie(browser, "refresh_token", token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
        response = await browser.post(f"{AUTH}/refresh", headers=csrf(browser))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"


class TestLogoutWithCookie:
    async def test_cookie_alone_ends_session_and_clears_cookies(
        self, browser: httpx.AsyncClient, cookie_app: FastAPI
    ) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/logout", headers=csrf(browser))
        assert response.status_code == 204
        cleared = set_cookies(response)
        assert cleared["refresh_token"]["max-age"] == "0"
        assert cleared["refresh_token"]["path"] == "/api/v1/auth"
        assert cleared["csrf_token"]["max-age"] == "0"
        assert cleared["csrf_token"]["path"] == "/"
        assert jar_cookie(browser, "refresh_token") is None
        assert jar_cookie(browser, "csrf_token") is None
        assert not await session_alive(browser, body["access_token"])
        refresh = await browser.post(f"{AUTH}/refresh", json={"refresh_token": body["refresh_token"]})
        assert refresh.status_code == 401

    async def test_cookie_without_csrf_403_session_lives(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/logout")
        assert response.status_code == 403
        assert response.json()["code"] == "csrf_failed"
        assert await session_alive(browser, body["access_token"])

    async def test_access_token_works_as_before_and_clears_cookies(
        self, browser: httpx.AsyncClient, cookie_app: FastAPI
    ) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/logout", headers=bearer(body["access_token"]))
        assert response.status_code == 204
        assert set(set_cookies(response)) == {"refresh_token", "csrf_token"}
        assert not await session_alive(browser, body["access_token"])

    async def test_invalid_access_token_401(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/logout", headers={**bearer("not-a-jwt"), **csrf(browser)})
        assert response.status_code == 401
        assert await session_alive(browser, body["access_token"])

    async def test_forged_cookie_401(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        token = body["refresh_token"]
        replace_cookie(browser, "refresh_token", token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
        response = await browser.post(f"{AUTH}/logout", headers=csrf(browser))
        assert response.status_code == 401
        assert await session_alive(browser, body["access_token"])

    async def test_does_not_rotate(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        response = await browser.post(f"{AUTH}/logout", headers=csrf(browser))
        assert response.status_code == 204
        assert await generation(cookie_app, body) == 0
        # the (unrotated) token now names an ended session: refused, not reuse-detected
        refresh = await browser.post(f"{AUTH}/refresh", json={"refresh_token": body["refresh_token"]})
        assert refresh.json()["code"] == "session_revoked"

    async def test_body_refresh_token_needs_no_csrf(self, browser: httpx.AsyncClient, cookie_app: FastAPI) -> None:
        _, body = await login(browser, cookie_app)
        browser.cookies.clear()
        response = await browser.post(f"{AUTH}/logout", json={"refresh_token": body["refresh_token"]})
        assert response.status_code == 204
        assert not await session_alive(browser, body["access_token"])

    async def test_no_credentials_401(self, browser: httpx.AsyncClient) -> None:
        response = await browser.post(f"{AUTH}/logout")
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    async def test_second_logout_with_the_same_cookie_is_harmless(
        self, browser: httpx.AsyncClient, cookie_app: FastAPI
    ) -> None:
        _, body = await login(browser, cookie_app)
        header = csrf(browser)
        refresh_cookie = jar_cookie(browser, "refresh_token")
        assert (await browser.post(f"{AUTH}/logout", headers=header)).status_code == 204
        browser.cookies.set("refresh_token", refresh_cookie or "", path="/api/v1/auth")
        browser.cookies.set("csrf_token", header["X-CSRF-Token"], path="/")
        assert (await browser.post(f"{AUTH}/logout", headers=header)).status_code == 204
        assert not await session_alive(browser, body["access_token"])
