"""Statements run on the pooled asyncpg connection itself: the hot paths' way past SQLAlchemy's execution layer.

The caller's lookup (app/auth/identity.py) and a credit spend (app/credits/service.py) are single statements
that need no ORM and no transaction of the request's. Through SQLAlchemy each cost about as much CPU as the
rest of its request (docs/SCALING.md); here a statement is built with SQLAlchemy once, compiled once for
asyncpg, and each request pays a pool checkout, one round trip and a check-in. Outside a transaction every
statement commits on its own. PostgreSQL only: other databases keep the Core/ORM path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import greenlet_spawn

from app.core.errors import DatabaseUnavailable

DISCONNECTS = (
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin shutdown, cannot connect now
    OSError,
    TimeoutError,
)
"""What a driver call raises when the connection, not the statement, failed."""


def uses_driver(engine: AsyncEngine) -> bool:
    return engine.dialect.driver == "asyncpg"


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

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The positional arguments: ``params`` by name, the statement's own constants for the rest."""
        constants = self._constants
        return [params[name] if name in params else constants[name] for name in self._order]


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection, outside any transaction, for the duration of the block.

    SQLAlchemy's disconnect handling does not see driver calls, so it is done here as SQLAlchemy would: a lost
    connection is invalidated and the pool replaced (every pooled connection died with the server or the
    network), and the request answers 503 ``database_unavailable``. A connection whose statement may not have
    finished (the request cancelled mid-statement) is closed, never handed to another request; one that
    reported an SQL error is fine and goes back to the pool.
    """
    connection = await engine.raw_connection()
    healthy = False
    try:
        driver = connection.driver_connection
        assert driver is not None
        try:
            yield driver
        except DISCONNECTS as exc:
            await engine.dispose(close=False)
            raise DatabaseUnavailable(headers={"Retry-After": "5"}) from exc
        except Exception:
            healthy = True
            raise
        healthy = True
    finally:
        # Check-in and invalidation may close the driver connection, which SQLAlchemy runs in a greenlet.
        if healthy:
            await greenlet_spawn(connection.close)
        else:
            await asyncio.shield(greenlet_spawn(connection.invalidate))
