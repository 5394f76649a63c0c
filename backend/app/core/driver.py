"""Statements run on asyncpg directly: the hot paths' way past SQLAlchemy's execution layer and pool.

The caller's lookup (app/auth/identity.py) and a credit spend (app/credits/service.py) are single statements
that need no ORM and no transaction of the request's. Through SQLAlchemy each cost about as much CPU as the
rest of its request (docs/SCALING.md); here a statement is built with SQLAlchemy once, compiled once for
asyncpg, and run on a connection of the app's own small asyncpg pool (``Driver``, ``AppState.data.driver``):
acquiring and releasing one costs a fraction of a checkout from SQLAlchemy's pool, which runs its
synchronous pool code in a greenlet twice per use. Outside a transaction every statement commits on its own.
PostgreSQL only: other databases keep the Core/ORM path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from app.core import db
from app.core.errors import DatabaseUnavailable
from app.core.settings import Settings

DISCONNECTS = (
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, cannot connect now
    OSError,
    TimeoutError,
)
"""What a driver call raises when the connection, not the statement, failed."""


class DriverStatement:
    """A SQLAlchemy statement compiled once for a dialect, with its parameters in driver order."""

    def __init__(self, dialect: Dialect, statement: Executable) -> None:
        self.statement = statement
        self._compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        self.sql = str(self._compiled)
        self._order: Sequence[str] = self._compiled.positiontup or ()
        # Values the statement carries itself (literals SQLAlchemy bound, e.g. a constant column value).
        self._constants = {
            name: bind.effective_value for name, bind in self._compiled.binds.items() if not bind.required
        }
        # Python-side column defaults an INSERT or UPDATE leaves to its execution (``default=new_id``,
        # ``onupdate=utcnow``): SQLAlchemy computes them when it executes a statement, so must this. Without it a
        # column left out would be written as NULL.
        compiled = self._compiled
        self._generated: dict[str, Callable[[Any], Any]] = {}
        for columns, kind in ((compiled.insert_prefetch, "default"), (compiled.update_prefetch, "onupdate")):
            for column in columns:
                generator = getattr(column, kind)
                if generator is not None and generator.is_callable:
                    self._generated[column.key] = generator.arg
                elif generator is not None and generator.is_scalar:
                    self._constants[column.key] = generator.arg

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The positional arguments: ``params`` by name, the statement's own constants or generated defaults for
        the rest."""
        return [params[name] if name in params else self._missing(name) for name in self._order]

    def _missing(self, name: str) -> Any:
        generate = self._generated.get(name)
        return self._constants[name] if generate is None else generate(None)


async def take_turn(gate: asyncio.Semaphore, seconds: float) -> None:
    """A FIFO turn for a pooled connection (``asyncio.Semaphore`` queues new arrivals behind the waiters), or
    TimeoutError after ``seconds``: no returned connection goes to a newcomer ahead of a request already waiting."""
    if not gate.locked():
        await gate.acquire()  # free: taken without suspending
        return
    # asyncio.timeout() arms one timer on the running task; wait_for() would wrap the wait in a new task, a
    # cost paid on every checkout that waits (docs/SCALING.md, "Pool sizing").
    async with asyncio.timeout(seconds):
        await gate.acquire()


logger = logging.getLogger("app.db")

_RETRY = {"Retry-After": "5"}


async def _keep_session_state(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``...: a round trip per use). These
    statements change no session state; asyncpg still rolls back a transaction left open."""


async def _decode_json(connection: asyncpg.Connection) -> None:
    """``json`` columns come back as Python values, as SQLAlchemy's asyncpg dialect hands them (audit details)."""
    await connection.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Driver:
    """The asyncpg pool of the hot-path statements, next to the engine's (PostgreSQL only).

    Connections open on demand, at most ``DATABASE_DRIVER_POOL_SIZE``, with the engine's connect arguments
    (timeouts, ``application_name``, no statement caches behind a transaction-mode pooler); one idle for over
    PING_IDLE_SECONDS is closed, so a connection dropped while idle (database restart, pooler or firewall
    timeout) is never handed to a request. Waiting requests are served first come, first served.
    """

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float) -> None:
        self.pool = pool
        self._timeout = acquire_timeout
        # asyncpg's pool queue lets a newcomer take a just-released connection ahead of the request woken for
        # it, which then queues again at the end, and the tail latency grows (docs/SCALING.md, "Pool sizing").
        # A FIFO turn per connection first.
        self._turns = asyncio.Semaphore(pool.get_max_size())

    @classmethod
    async def create(cls, engine: AsyncEngine, settings: Settings) -> Driver | None:
        if engine.dialect.driver != "asyncpg":
            return None
        _, url_kwargs = engine.dialect.create_connect_args(engine.url)
        names = ("host", "port", "user", "password", "database", "ssl")
        kwargs = {name: url_kwargs[name] for name in names if url_kwargs.get(name) is not None}
        kwargs.update(db.connect_args(settings, driver=True))
        pool = await asyncpg.create_pool(
            min_size=0,
            max_size=settings.DATABASE_DRIVER_POOL_SIZE,
            max_inactive_connection_lifetime=db.PING_IDLE_SECONDS,
            reset=_keep_session_state,
            init=_decode_json,
            **kwargs,
        )
        return cls(pool, acquire_timeout=settings.DATABASE_POOL_TIMEOUT)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:
            self.pool.terminate()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, outside any transaction, for the duration of the block.

        No connection to be had (the database down, the pool's wait timed out): 503 ``database_unavailable``.
        A connection lost mid-statement: 503, and every pooled connection is replaced (they most likely died
        with the server or the network). A connection whose statement was cancelled midway goes back only once
        asyncpg has seen the server finish the cancellation (else asyncpg closes it), so no request gets a
        connection still busy; one that reported an SQL error is fine and goes back to the pool.
        """
        try:
            await take_turn(self._turns, self._timeout)
        except TimeoutError as exc:
            logger.warning("no driver connection within %.1f s", self._timeout)
            raise DatabaseUnavailable(headers=_RETRY) from exc
        try:
            try:
                connection = await self.pool.acquire(timeout=self._timeout)  # a turn means one is free
            except DISCONNECTS as exc:
                logger.warning("no driver connection: %s", type(exc).__name__)
                raise DatabaseUnavailable(headers=_RETRY) from exc
            try:
                yield cast(asyncpg.Connection, connection)
            except DISCONNECTS as exc:
                await self.pool.expire_connections()
                raise DatabaseUnavailable(headers=_RETRY) from exc
            finally:
                await self.pool.release(connection)  # shielded by asyncpg: a cancelled request still releases
        finally:
            self._turns.release()
