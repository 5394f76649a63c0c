"""The database goes away and comes back: /health says so, requests answer a clean 503, no restart needed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.state import state_of
from tests.conftest import PG_HOST, PG_PORT, AppFactory, client_for, requires_postgres
from tests.factories import create_user
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.asyncio, requires_postgres()]


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    tcp = TcpProxy(PG_HOST, PG_PORT)
    await tcp.start()
    yield tcp
    await tcp.stop()


class TestDatabaseOutage:
    async def test_degraded_then_recovers(self, app: FastAPI, make_app: AppFactory, proxy: TcpProxy) -> None:
        url = state_of(app).settings.DATABASE_URL.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
        proxied = await make_app(DATABASE_URL=url, DATABASE_CONNECT_TIMEOUT=2, DATABASE_POOL_TIMEOUT=2)
        user = await create_user(app)
        async with client_for(proxied) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200

            await proxy.stop()
            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "degraded" and health.json()["database"] == "error"
            me = await client.get("/api/v1/users/me", headers=user.headers)
            assert me.status_code == 503
            assert me.json()["code"] == "database_unavailable"
            assert (await client.get("/health/live")).status_code == 200

            await proxy.start()
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
