"""app/core/driver.py: statements on the app's asyncpg pool, and what happens to its connections."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import Integer, bindparam, insert, literal, select, update

from app.audit.models import AuditEvent
from app.core.driver import Driver, DriverStatement
from app.core.errors import DatabaseUnavailable
from app.state import state_of
from app.users.models import Profile
from tests.conftest import AppFactory, requires_postgres

pytestmark = [pytest.mark.asyncio, requires_postgres()]


def driver_of(app: FastAPI) -> Driver:
    driver: Driver | None = state_of(app).data.driver
    assert driver is not None
    return driver


async def admin(app: FastAPI) -> asyncpg.Connection:
    return await asyncpg.connect(state_of(app).settings.DATABASE_URL.replace("+asyncpg", ""))


async def test_arguments_in_driver_order_with_the_statements_own_constants(app: FastAPI) -> None:
    statement = DriverStatement(
        state_of(app).engine.dialect,
        select(bindparam("b", type_=Integer), literal("fixed"), bindparam("a", type_=Integer)),
    )
    async with driver_of(app).connection() as connection:
        row = await connection.fetchrow(statement.sql, *statement.args({"a": 1, "b": 2}))
    assert tuple(row) == (2, "fixed", 1)


async def test_python_side_column_defaults_are_generated_as_sqlalchemy_does(app: FastAPI) -> None:
    # An INSERT leaving out id / details / created_at (default=new_id, dict, utcnow) and an UPDATE leaving out
    # updated_at (onupdate=utcnow): each run gets fresh values, never NULL.
    dialect = state_of(app).engine.dialect
    event = DriverStatement(dialect, insert(AuditEvent).values(action=bindparam("action")).returning(AuditEvent))
    first, second = event.args({"action": "a"}), event.args({"action": "a"})
    assert first[0] != second[0] and isinstance(first[0], uuid.UUID)
    async with driver_of(app).connection() as connection:
        row = await connection.fetchrow(event.sql, *first)
    assert row["id"] == first[0] and row["details"] == {} and row["created_at"] is not None
    touch = DriverStatement(dialect, update(Profile).where(Profile.id == bindparam("k")).values(avatar_url=None))
    generated = dict(zip(touch._order, touch.args({"k": uuid.uuid4()}), strict=True))
    assert isinstance(generated["updated_at"], datetime) and generated["updated_at"].tzinfo is not None


async def test_its_own_small_pool_with_the_engines_connection_settings(make_app: AppFactory) -> None:
    app = await make_app(DATABASE_DRIVER_POOL_SIZE=3)
    pool = driver_of(app).pool
    assert pool.get_max_size() == 3
    async with driver_of(app).connection() as connection:
        name = await connection.fetchval("SELECT current_setting('application_name')")
        in_transaction = connection.is_in_transaction()
    assert name == "organizations-api"
    assert not in_transaction  # each statement commits on its own


async def test_sqlite_has_no_driver(make_app: AppFactory, tmp_path) -> None:
    app = await make_app(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/d.db")
    assert state_of(app).data.driver is None


async def test_an_sql_error_leaves_the_connection_in_the_pool(app: FastAPI) -> None:
    driver = driver_of(app)
    with pytest.raises(asyncpg.PostgresError):
        async with driver.connection() as connection:
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            await connection.execute("SELECT no_such_column FROM users")
    async with driver.connection() as connection:  # the last one released is the next one handed out
        assert await connection.fetchval("SELECT pg_backend_pid()") == pid


async def test_a_statement_cancelled_midway_is_over_before_its_connection_is_reused(make_app: AppFactory) -> None:
    app = await make_app(DATABASE_DRIVER_POOL_SIZE=1)
    driver = driver_of(app)
    started = asyncio.Event()

    async def slow() -> None:
        async with driver.connection() as connection:
            started.set()
            await connection.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with driver.connection() as connection:  # the pool's only connection, answering at once
        assert await asyncio.wait_for(connection.fetchval("SELECT 1"), 2) == 1
    observer = await admin(app)
    try:
        sleeping = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        )
    finally:
        await observer.close()
    assert sleeping == 0


async def test_a_lost_connection_answers_503_and_replaces_the_pool(make_app: AppFactory) -> None:
    app = await make_app(DATABASE_DRIVER_POOL_SIZE=2)
    driver = driver_of(app)
    async with driver.connection() as first, driver.connection() as second:
        pids = {await first.fetchval("SELECT pg_backend_pid()"), await second.fetchval("SELECT pg_backend_pid()")}
    killer = await admin(app)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with driver.connection() as connection:
                pid = await connection.fetchval("SELECT pg_backend_pid()")
                assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
                await asyncio.sleep(0.1)
                await connection.fetchval("SELECT 1")
    finally:
        await killer.close()
    # The other pooled connection (most likely dead too after a server restart) is not handed out again.
    async with driver.connection() as connection:
        assert await connection.fetchval("SELECT pg_backend_pid()") not in pids


async def test_no_connection_within_the_pool_timeout_answers_503(make_app: AppFactory) -> None:
    app = await make_app(DATABASE_DRIVER_POOL_SIZE=1, DATABASE_POOL_TIMEOUT=0.2)
    driver = driver_of(app)
    async with driver.connection():
        with pytest.raises(DatabaseUnavailable):
            async with driver.connection():
                pass
    async with driver.connection() as connection:
        assert await connection.fetchval("SELECT 1") == 1


async def test_an_unreachable_database_answers_503(make_app: AppFactory) -> None:
    app = await make_app(DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:9/nowhere", DATABASE_CONNECT_TIMEOUT=1)
    with pytest.raises(DatabaseUnavailable):
        async with driver_of(app).connection():
            pass


async def test_a_connection_idle_for_longer_than_the_ping_interval_is_closed(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Silently dropped connections (a pooler's or firewall's idle timeout) are never handed to a request: the
    # pool closes what sat idle for PING_IDLE_SECONDS and connects anew on demand.
    from app.core import db

    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.3)
    app = await make_app()
    async with driver_of(app).connection() as connection:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
    observer = await admin(app)
    try:
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        assert await observer.fetchval(alive, pid) == 1
        await asyncio.sleep(1.0)
        assert await observer.fetchval(alive, pid) == 0
    finally:
        await observer.close()


async def test_waiting_requests_are_served_in_arrival_order(make_app: AppFactory) -> None:
    # They wait for a FIFO turn, never in asyncpg's pool queue (where a newcomer can take a just-released
    # connection ahead of the request woken for it).
    app = await make_app(DATABASE_DRIVER_POOL_SIZE=1, DATABASE_POOL_TIMEOUT=10)
    driver = driver_of(app)
    order: list[int] = []

    async def checkout(n: int) -> None:
        async with driver.connection() as connection:
            order.append(n)
            await connection.fetchval("SELECT 1")

    async with driver.connection():
        waiting = []
        for n in range(5):
            waiting.append(asyncio.create_task(checkout(n)))
            await asyncio.sleep(0.01)
        assert len(driver._turns._waiters or ()) == 5
        assert not driver.pool._queue._getters
    await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("pgbouncer", "prepared"), [(False, True), (True, False)])
async def test_behind_a_transaction_mode_pooler_nothing_is_prepared_by_name(
    make_app: AppFactory, pgbouncer: bool, prepared: bool
) -> None:
    # DATABASE_PGBOUNCER: a statement prepared by name on one server connection is unknown on the next.
    app = await make_app(DATABASE_PGBOUNCER=pgbouncer, DATABASE_DRIVER_POOL_SIZE=1)
    async with driver_of(app).connection() as connection:
        for _ in range(2):
            assert await connection.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.uuid4()) == 0
        named = await connection.fetchval("SELECT count(*) FROM pg_prepared_statements")
    assert (named > 0) is prepared
