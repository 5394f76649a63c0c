"""Security headers on every answer (errors included), CSP by CSP_MODE, HSTS only in production."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.core.middleware import CSP_DOCS_STRICT, CSP_RELAXED, CSP_STRICT
from tests.conftest import AppFactory, client_for

pytestmark = pytest.mark.asyncio

API = "/api/v1"
FIXED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


async def boom() -> None:
    raise RuntimeError("secret internals")


async def app_with_boom(make_app: AppFactory, **overrides: Any) -> FastAPI:
    app = await make_app(**overrides)
    app.add_api_route(f"{API}/test-boom", boom, methods=["GET"])
    return app


# (method, path, extra request kwargs, expected status): one of each kind of answer.
ANSWERS = [
    ("GET", "/health/live", {}, 200),
    ("GET", f"{API}/openapi.json", {}, 200),
    ("GET", f"{API}/users/me", {}, 401),
    ("GET", f"{API}/no-such-route", {}, 404),
    ("GET", "/nowhere", {}, 404),
    ("DELETE", f"{API}/auth/login", {}, 405),
    ("POST", f"{API}/auth/login", {"json": {"email": "not-an-email"}}, 422),
    ("POST", f"{API}/auth/login", {"content": b"x" * 2_000_000, "headers": {"Content-Type": "application/json"}}, 413),
    ("GET", f"{API}/test-boom", {}, 500),
    ("GET", "/docs", {}, 200),
]
IDS = [f"{status}-{method}-{path}" for method, path, _, status in ANSWERS]


async def fetch(client: httpx.AsyncClient, method: str, path: str, extra: dict[str, Any]) -> httpx.Response:
    return await client.request(method, path, **extra)


class TestEveryAnswer:
    @pytest.mark.parametrize(("method", "path", "extra", "status"), ANSWERS, ids=IDS)
    async def test_strict(
        self, make_app: AppFactory, method: str, path: str, extra: dict[str, Any], status: int
    ) -> None:
        app = await app_with_boom(make_app, CSP_MODE="strict")
        async with client_for(app) as client:
            response = await fetch(client, method, path, extra)
        assert response.status_code == status
        for name, value in FIXED.items():
            assert response.headers[name] == value
        assert "camera=()" in response.headers["Permissions-Policy"]
        expected = CSP_DOCS_STRICT if path.startswith("/docs") else CSP_STRICT
        assert response.headers["Content-Security-Policy"] == expected
        assert "Strict-Transport-Security" not in response.headers  # not production
        assert response.headers["X-Request-ID"]
        assert "secret internals" not in response.text

    async def test_429(self, make_app: AppFactory) -> None:
        app = await make_app(CSP_MODE="strict", RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT="1/minute")
        async with client_for(app) as client:
            await client.get(f"{API}/users/me")
            response = await client.get(f"{API}/users/me")
        assert response.status_code == 429
        for name, value in FIXED.items():
            assert response.headers[name] == value
        assert response.headers["Content-Security-Policy"] == CSP_STRICT

    async def test_cors_preflight(self, make_app: AppFactory) -> None:
        app = await make_app(CSP_MODE="strict", BACKEND_CORS_ORIGINS=["https://app.example"])
        async with client_for(app) as client:
            response = await client.options(
                f"{API}/users/me",
                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
            )
        assert response.status_code == 200
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == CSP_STRICT


class TestCspMode:
    async def test_strict_api_answers_load_nothing(self, make_app: AppFactory) -> None:
        app = await make_app(CSP_MODE="strict")
        async with client_for(app) as client:
            csp = (await client.get("/health/live")).headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp

    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect", "/docs/init.js"])
    async def test_strict_docs_no_inline_script(self, make_app: AppFactory, path: str) -> None:
        app = await make_app(CSP_MODE="strict")
        async with client_for(app) as client:
            csp = (await client.get(path)).headers["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert "http" not in csp  # no other origin
        assert directives["frame-ancestors"] == "'none'"

    async def test_strict_docs_lookalike_path_is_an_api_answer(self, make_app: AppFactory) -> None:
        app = await make_app(CSP_MODE="strict")
        async with client_for(app) as client:
            response = await client.get("/docsearch")
        assert response.status_code == 404
        assert response.headers["Content-Security-Policy"] == CSP_STRICT

    @pytest.mark.parametrize("path", ["/health/live", "/docs", f"{API}/no-such-route"])
    async def test_relaxed(self, make_app: AppFactory, path: str) -> None:
        app = await make_app(CSP_MODE="relaxed")
        async with client_for(app) as client:
            response = await client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP_RELAXED
        assert response.headers["X-Frame-Options"] == "DENY"

    @pytest.mark.parametrize("path", ["/health/live", "/docs", f"{API}/no-such-route"])
    async def test_disabled(self, make_app: AppFactory, path: str) -> None:
        app = await make_app(CSP_MODE="disabled")
        async with client_for(app) as client:
            response = await client.get(path)
        assert "Content-Security-Policy" not in response.headers
        assert response.headers["X-Content-Type-Options"] == "nosniff"

    async def test_default_by_environment(self, make_app: AppFactory) -> None:
        development = await make_app(ENVIRONMENT="development")
        production = await make_app(ENVIRONMENT="production")
        async with client_for(development) as client:
            assert (await client.get("/health/live")).headers["Content-Security-Policy"] == CSP_RELAXED
        async with client_for(production) as client:
            assert (await client.get("/health/live")).headers["Content-Security-Policy"] == CSP_STRICT


class TestHsts:
    @pytest.mark.parametrize("path", ["/health/live", f"{API}/no-such-route", "/docs"])
    async def test_production(self, make_app: AppFactory, path: str) -> None:
        app = await make_app(ENVIRONMENT="production")
        async with client_for(app) as client:
            response = await client.get(path)
        hsts = response.headers["Strict-Transport-Security"]
        assert hsts.startswith("max-age=")
        assert int(hsts.split(";")[0].removeprefix("max-age=")) >= 31536000

    @pytest.mark.parametrize("environment", ["development", "test"])
    async def test_not_outside_production(self, make_app: AppFactory, environment: str) -> None:
        app = await make_app(ENVIRONMENT=environment)
        async with client_for(app) as client:
            assert "Strict-Transport-Security" not in (await client.get("/health/live")).headers


class TestHandlerHeadersWin:
    async def test_an_endpoint_may_set_its_own_policy(self, make_app: AppFactory) -> None:
        from fastapi.responses import PlainTextResponse

        app = await make_app(CSP_MODE="strict")

        async def own() -> PlainTextResponse:
            return PlainTextResponse("ok", headers={"Referrer-Policy": "same-origin"})

        app.add_api_route("/own-policy", own, methods=["GET"])
        async with client_for(app) as client:
            response = await client.get("/own-policy")
        assert response.headers.get_list("Referrer-Policy") == ["same-origin"]
        assert response.headers["X-Frame-Options"] == "DENY"
