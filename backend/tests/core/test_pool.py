"""The pool every request reads and writes through (the asyncpg pool on PostgreSQL, app/core/data.py): a
request that cannot get a connection within DATABASE_POOL_TIMEOUT answers 503, and the next one is served."""

from __future__ import annotations

import pytest

from app.state import state_of
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.factories import create_user

pytestmark = [pytest.mark.asyncio, requires_postgres()]


async def test_a_request_that_cannot_get_a_connection_answers_503(make_app: AppFactory) -> None:
    application = await make_app(DATABASE_DRIVER_POOL_SIZE=1, DATABASE_POOL_TIMEOUT=0.2)
    user = await create_user(application)
    driver = state_of(application).data.driver
    assert driver is not None
    async with client_for(application) as client:
        async with driver.connection():  # the pool's only connection, held
            response = await client.put("/api/v1/profile", json={"full_name": "Held"}, headers=user.headers)
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
        assert (
            await client.put("/api/v1/profile", json={"full_name": "Held"}, headers=user.headers)
        ).status_code == 200
