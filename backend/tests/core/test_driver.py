"""app/core/driver.py: statements on the pooled asyncpg connection, and what happens to that connection."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import Integer, bindparam, literal, select

from app.core.driver import DriverStatement, driver_connection
from tests.conftest import requires_postgres

pytestmark = [pytest.mark.asyncio, requires_postgres()]


async def test_arguments_in_driver_order_with_the_statements_own_constants(app: FastAPI) -> None:
    statement = DriverStatement(
        app.state.engine.dialect, select(bindparam("b", type_=Integer), literal("fixed"), bindparam("a", type_=Integer))
    )
    async with driver_connection(app.state.engine) as driver:
        row = await driver.fetchrow(statement.sql, *statement.args({"a": 1, "b": 2}))
    assert tuple(row) == (2, "fixed", 1)


async def test_an_sql_error_leaves_the_connection_in_the_pool(app: FastAPI) -> None:
    engine = app.state.engine
    pids: list[int] = []
    with pytest.raises(asyncpg.PostgresError):
        async with driver_connection(engine) as driver:
            pids.append(await driver.fetchval("SELECT pg_backend_pid()"))
            await driver.execute("SELECT no_such_column FROM users")
    seen = set()
    for _ in range(engine.pool.checkedin()):  # first in, first out: each pooled connection once
        async with driver_connection(engine) as driver:
            seen.add(await driver.fetchval("SELECT pg_backend_pid()"))
    assert pids[0] in seen


async def test_a_statement_cancelled_midway_closes_its_connection(app: FastAPI) -> None:
    engine = app.state.engine
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with driver_connection(engine) as driver:
            pids.append(await driver.fetchval("SELECT pg_backend_pid()"))
            started.set()
            await driver.execute("SELECT pg_sleep(5)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Every pooled connection answers at once (none is busy with the cancelled statement) and the cancelled
    # one's backend is gone from the pool.
    seen = set()
    for _ in range(engine.pool.checkedin()):
        async with driver_connection(engine) as driver:
            seen.add(await asyncio.wait_for(driver.fetchval("SELECT pg_backend_pid()"), 2))
    assert pids[0] not in seen
