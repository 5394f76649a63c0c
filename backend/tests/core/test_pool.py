"""app/core/db.py FairQueuePool: waiting checkouts are served first come, first served, and a wait that runs
out answers 503 without losing the turn it never got."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import FairQueuePool
from app.state import state_of
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.factories import create_user

pytestmark = [pytest.mark.asyncio, requires_postgres()]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def _waiting(engine: AsyncEngine) -> int:
    turns = engine.pool._turns  # type: ignore[attr-defined]
    return len(turns._waiters or ()) if turns is not None else 0


async def test_the_postgres_engine_uses_the_fair_pool(make_app: AppFactory) -> None:
    application = await make_app(DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0)
    assert isinstance(state_of(application).engine.pool, FairQueuePool)


async def test_waiters_are_served_in_arrival_order_ahead_of_newcomers(make_app: AppFactory) -> None:
    application = await make_app(DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0, DATABASE_POOL_TIMEOUT=10)
    engine: AsyncEngine = state_of(application).engine
    order: list[str] = []

    async def checkout(name: str) -> None:
        async with engine.connect() as connection:
            order.append(name)
            await connection.exec_driver_sql("SELECT 1")

    held = await engine.connect()
    first = asyncio.create_task(checkout("first"))
    await _until(lambda: _waiting(engine) == 1)
    second = asyncio.create_task(checkout("second"))
    await _until(lambda: _waiting(engine) == 2)
    await held.close()  # the connection goes back while both wait ...
    newcomer = asyncio.create_task(checkout("newcomer"))  # ... and a new request asks at that very moment
    await asyncio.wait_for(asyncio.gather(first, second, newcomer), 10)
    assert order == ["first", "second", "newcomer"]


async def test_a_wait_that_runs_out_raises_and_gives_no_turn_away(make_app: AppFactory) -> None:
    application = await make_app(DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0, DATABASE_POOL_TIMEOUT=0.2)
    engine: AsyncEngine = state_of(application).engine
    held = await engine.connect()
    with pytest.raises(PoolTimeoutError):
        await engine.connect()
    assert _waiting(engine) == 0
    await held.close()
    async with asyncio.timeout(1):  # the one turn is free again: taken at once
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("SELECT 1")).scalar_one() == 1
    assert engine.pool._turns._value == 1  # type: ignore[attr-defined]


async def test_a_request_that_cannot_get_a_connection_answers_503(make_app: AppFactory) -> None:
    application = await make_app(DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0, DATABASE_POOL_TIMEOUT=0.2)
    user = await create_user(application)
    async with client_for(application) as client:
        held = await state_of(application).engine.connect()
        try:  # the caller is found (driver pool, app/core/driver.py); a write needs the engine's pool
            response = await client.put("/api/v1/profile", json={"full_name": "Held"}, headers=user.headers)
        finally:
            await held.close()
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
        assert (
            await client.put("/api/v1/profile", json={"full_name": "Held"}, headers=user.headers)
        ).status_code == 200
