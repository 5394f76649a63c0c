"""CORS: only BACKEND_CORS_ORIGINS, with credentials."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from tests.conftest import AppFactory, client_for
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

ALLOWED = "https://app.example"
REFUSED = "https://evil.example"
PATH = "/api/v1/users/me"


@pytest_asyncio.fixture
async def cors_app(make_app: AppFactory) -> FastAPI:
    return await make_app(BACKEND_CORS_ORIGINS=f"{ALLOWED},http://localhost:5173")


async def preflight(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    return await client.options(
        PATH,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


class TestPreflight:
    async def test_allowed_origin(self, cors_app: FastAPI) -> None:
        async with client_for(cors_app) as client:
            response = await preflight(client, ALLOWED)
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
        assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()

    async def test_refused_origin(self, cors_app: FastAPI) -> None:
        async with client_for(cors_app) as client:
            response = await preflight(client, REFUSED)
        assert response.status_code == 400
        assert "Access-Control-Allow-Origin" not in response.headers

    async def test_refused_lookalike_origin(self, cors_app: FastAPI) -> None:
        async with client_for(cors_app) as client:
            response = await preflight(client, ALLOWED + ".evil.example")
        assert "Access-Control-Allow-Origin" not in response.headers


class TestSimpleRequest:
    async def test_allowed_origin_with_credentials(self, cors_app: FastAPI) -> None:
        user = await create_user(cors_app)
        async with client_for(cors_app) as client:
            response = await client.get(PATH, headers={**user.headers, "Origin": ALLOWED})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED  # never "*" with credentials
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        exposed = response.headers["Access-Control-Expose-Headers"].lower()
        assert {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-request-id"} <= {
            name.strip() for name in exposed.split(",")
        }

    async def test_refused_origin_gets_no_cors_headers(self, cors_app: FastAPI) -> None:
        user = await create_user(cors_app)
        async with client_for(cors_app) as client:
            response = await client.get(PATH, headers={**user.headers, "Origin": REFUSED})
        assert "Access-Control-Allow-Origin" not in response.headers  # the browser hides the answer

    async def test_error_answers_carry_cors_headers(self, cors_app: FastAPI) -> None:
        async with client_for(cors_app) as client:
            response = await client.get(PATH, headers={"Origin": ALLOWED})
        assert response.status_code == 401
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
