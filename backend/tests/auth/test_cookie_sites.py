"""The cookie-mode pitfall: a page on another site than the API never sends the SameSite=Strict refresh cookie.
The app warns at start-up about such CORS origins, and the refresh answer names the likely cause."""

from __future__ import annotations

import logging

import pytest

from app.auth.cookies import cross_site_origins, site_of
from app.core.settings import Settings
from tests.conftest import AppFactory, client_for

ORIGINS = '["http://localhost:5173", "http://127.0.0.1:5173", "https://app.example.com"]'


@pytest.mark.parametrize(
    ("host", "site"),
    [
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("api.example.com", "example.com"),
        ("APP.Example.COM.", "example.com"),
        ("[::1]", "::1"),
        ("0.0.0.0", None),  # noqa: S104 (a host name, not a bind)
        ("::", None),
    ],
)
def test_site_of(host: str, site: str | None) -> None:
    assert site_of(host) == site


@pytest.mark.parametrize(
    ("host", "foreign"),
    [
        ("127.0.0.1", ["http://localhost:5173", "https://app.example.com"]),
        ("localhost", ["http://127.0.0.1:5173", "https://app.example.com"]),
        ("api.example.com", ["http://localhost:5173", "http://127.0.0.1:5173"]),
        ("0.0.0.0", []),  # noqa: S104 (every interface: the API's site is not known here)
    ],
)
def test_cross_site_origins(host: str, foreign: list[str]) -> None:
    settings = Settings(_env_file=None, AUTH_REFRESH_COOKIE=True, HOST=host, BACKEND_CORS_ORIGINS=ORIGINS)
    assert cross_site_origins(settings) == foreign


def test_no_check_without_cookie_mode() -> None:
    assert cross_site_origins(Settings(_env_file=None, HOST="127.0.0.1", BACKEND_CORS_ORIGINS=ORIGINS)) == []


@pytest.mark.asyncio
class TestStartup:
    async def test_warns_about_origins_of_another_site(
        self, make_app: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="app"):
            await make_app(AUTH_REFRESH_COOKIE=True, HOST="127.0.0.1", BACKEND_CORS_ORIGINS=ORIGINS)
        warnings = [record.getMessage() for record in caplog.records if "SameSite" in record.getMessage()]
        assert len(warnings) == 1
        assert "http://localhost:5173" in warnings[0] and "https://app.example.com" in warnings[0]
        assert "http://127.0.0.1:5173" not in warnings[0]

    async def test_quiet_when_every_origin_is_on_the_api_site(
        self, make_app: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="app"):
            await make_app(AUTH_REFRESH_COOKIE=True, HOST="127.0.0.1", BACKEND_CORS_ORIGINS='["http://127.0.0.1:5173"]')
        assert not [record for record in caplog.records if "SameSite" in record.getMessage()]


@pytest.mark.asyncio
class TestRefreshWithoutCookie:
    async def test_cookie_mode_names_the_likely_cause(self, make_app: AppFactory) -> None:
        application = await make_app(AUTH_REFRESH_COOKIE=True)
        async with client_for(application) as client:
            response = await client.post("/api/v1/auth/refresh")
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "invalid_refresh_token"
        assert "no refresh_token cookie" in body["detail"] and "SameSite=Strict" in body["detail"]
        assert "localhost and 127.0.0.1 are different sites" in body["detail"]

    async def test_body_mode_keeps_the_short_detail(self, make_app: AppFactory) -> None:
        application = await make_app()
        async with client_for(application) as client:
            response = await client.post("/api/v1/auth/refresh")
        assert response.status_code == 401
        assert response.json()["detail"] == "A refresh token is required."


@pytest.mark.asyncio
async def test_logout_without_token_or_cookie_names_the_cookie_in_cookie_mode(make_app: AppFactory) -> None:
    application = await make_app(AUTH_REFRESH_COOKIE=True)
    async with client_for(application) as client:
        response = await client.post("/api/v1/auth/logout")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated" and "SameSite=Strict" in response.json()["detail"]
