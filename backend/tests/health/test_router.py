from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import AppFactory

pytestmark = pytest.mark.asyncio


class TestHealth:
    async def test_ok(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["database"] == "ok"
        assert body["environment"] == "test"
        assert body["version"]
        assert body["timestamp"].endswith(("Z", "+00:00"))

    async def test_live(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/live")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_degraded_when_database_unreachable(self, make_app: AppFactory) -> None:
        # a port nothing listens on: the database is "down" for this app instance
        if_sqlite = "sqlite+aiosqlite:////nonexistent-dir/never.db"
        app: FastAPI = await make_app(
            DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/none", DATABASE_CONNECT_TIMEOUT=1
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            response = await c.get("/health")
            assert response.status_code == 503
            assert response.json()["status"] == "degraded"
            assert response.json()["database"] == "error"
            live = await c.get("/health/live")
            assert live.status_code == 200
        app2: FastAPI = await make_app(DATABASE_URL=if_sqlite)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://t") as c:
            assert (await c.get("/health")).status_code == 503
