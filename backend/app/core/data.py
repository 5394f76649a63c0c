"""The one way the app runs a read: a SQLAlchemy Core statement, compiled once, rows handed out as frozen values.

A ``Query`` pairs a Core statement with the frozen dataclass its rows become. ``Data`` (``AppState.data``) runs
it outside any request transaction:

- on PostgreSQL, on a connection of the app's asyncpg pool (``Driver``, app/core/driver.py): the statement is
  compiled once for asyncpg and sent as is, each statement committing on its own (no ``BEGIN``/``COMMIT`` round
  trips, no ORM unit of work, no SQLAlchemy execution layer);
- on SQLite (the embedded development database), through SQLAlchemy Core on the engine, in a deferred
  (read-only) transaction that never waits for a writer's lock.

The same ``Query`` also runs inside a request's transaction (``in_session``), where a write needs to read
what it is about to change: one statement and one row type per fact, whichever way it is executed.

Why (docs/SCALING.md, "One data path"): through the ORM session a page paid the unit of work, the identity map
and a transaction of its own, several times the CPU of its SQL; here a page costs its statements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Generic, Protocol, TypeVar

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import Select, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import Executable

from app.core.driver import Driver, DriverStatement
from app.state import state_of

R = TypeVar("R")
S = TypeVar("S", bound=Select)  # type: ignore[type-arg]

SQLITE_READ = {"sqlite_begin": "DEFERRED"}
"""Execution options of a read-only SQLite connection (app.core.db emits ``BEGIN DEFERRED`` for it)."""


class Query(Generic[R]):
    """A Core statement and what each of its rows becomes (``row(*values)``, in the statement's column order).

    Built once, at import; compiled for asyncpg on first use and kept (the compiled SQL and its parameter order).
    """

    def __init__(self, statement: Executable, row: Callable[..., R]) -> None:
        self.statement = statement
        self.row = row
        self._compiled: DriverStatement | None = None

    def compiled(self, dialect: Dialect) -> DriverStatement:
        if self._compiled is None:
            self._compiled = DriverStatement(dialect, self.statement)
        return self._compiled


def paged(statement: S) -> S:
    """A page of ``statement``'s rows: ``limit`` and ``offset`` are parameters of each run."""
    return statement.limit(bindparam("limit")).offset(bindparam("offset"))


def scalar(value: Any) -> Any:
    """The row type of a one-column query: the value itself."""
    return value


class Statements(Protocol):
    """What a connection of either kind offers: the rows of a ``Query``, or its first value."""

    postgresql: bool  # a change that must be atomic is one statement there (data-modifying CTEs)

    async def one(self, query: Query[R], **params: Any) -> R | None: ...
    async def all(self, query: Query[R], **params: Any) -> list[R]: ...
    async def value(self, query: Query[Any], **params: Any) -> Any: ...
    async def run(self, query: Query[Any], **params: Any) -> None: ...


class _AsyncpgStatements:
    postgresql = True

    def __init__(self, connection: asyncpg.Connection, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    async def one(self, query: Query[R], **params: Any) -> R | None:
        compiled = query.compiled(self._dialect)
        record = await self._connection.fetchrow(compiled.sql, *compiled.args(params))
        return None if record is None else query.row(*record)

    async def all(self, query: Query[R], **params: Any) -> list[R]:
        compiled = query.compiled(self._dialect)
        make = query.row
        return [make(*record) for record in await self._connection.fetch(compiled.sql, *compiled.args(params))]

    async def value(self, query: Query[Any], **params: Any) -> Any:
        compiled = query.compiled(self._dialect)
        return await self._connection.fetchval(compiled.sql, *compiled.args(params))

    async def run(self, query: Query[Any], **params: Any) -> None:
        compiled = query.compiled(self._dialect)
        await self._connection.execute(compiled.sql, *compiled.args(params))


class _CoreStatements:
    """SQLAlchemy Core on a connection or on a request's session (its transaction)."""

    def __init__(self, connection: AsyncConnection | AsyncSession) -> None:
        self._connection = connection
        bind = connection.get_bind() if isinstance(connection, AsyncSession) else connection
        self.postgresql = bind.dialect.name == "postgresql"

    async def one(self, query: Query[R], **params: Any) -> R | None:
        row = (await self._connection.execute(query.statement, params)).one_or_none()
        return None if row is None else query.row(*row)

    async def all(self, query: Query[R], **params: Any) -> list[R]:
        make = query.row
        return [make(*row) for row in await self._connection.execute(query.statement, params)]

    async def value(self, query: Query[Any], **params: Any) -> Any:
        return (await self._connection.execute(query.statement, params)).scalar()

    async def run(self, query: Query[Any], **params: Any) -> None:
        await self._connection.execute(query.statement, params)


def in_session(session: AsyncSession | AsyncConnection) -> Statements:
    """The same queries inside a transaction (a request's session): for a write that reads what it changes."""
    return _CoreStatements(session)


class Data:
    """Reads outside any request transaction (``AppState.data``, made in the lifespan)."""

    def __init__(self, engine: AsyncEngine, driver: Driver | None) -> None:
        self.engine = engine
        self.driver = driver  # None: not PostgreSQL

    @asynccontextmanager
    async def connection(self, *, write: bool = False) -> AsyncIterator[Statements]:
        """One connection for several statements (a page's count and rows), then straight back to the pool.

        On PostgreSQL each statement commits on its own, so a change that must be atomic is written as one
        statement. On SQLite the block is one transaction: read-only (deferred), or with ``write`` one that takes
        the database's write lock at once and commits when the block ends (rolled back if it raises).
        """
        if self.driver is not None:
            async with self.driver.connection() as connection:
                yield _AsyncpgStatements(connection, self.engine.dialect)
            return
        if write:
            async with self.engine.begin() as connection:
                yield _CoreStatements(connection)
            return
        async with self.engine.connect() as connection:
            yield _CoreStatements(await connection.execution_options(**SQLITE_READ))

    async def one(self, query: Query[R], **params: Any) -> R | None:
        async with self.connection() as connection:
            return await connection.one(query, **params)

    async def all(self, query: Query[R], **params: Any) -> list[R]:
        async with self.connection() as connection:
            return await connection.all(query, **params)

    async def value(self, query: Query[Any], **params: Any) -> Any:
        async with self.connection() as connection:
            return await connection.value(query, **params)

    async def page(
        self, count: Query[Any], rows: Query[R], *, limit: int, offset: int, **params: Any
    ) -> tuple[list[R], int]:
        """A page of ``rows`` (a ``paged`` query) and the total ``count`` gives, on one connection."""
        async with self.connection() as connection:
            total = await connection.value(count, **params)
            items = await connection.all(rows, limit=limit, offset=offset, **params)
        return items, int(total or 0)

    async def run(self, query: Query[Any], **params: Any) -> None:
        """One statement that commits on its own (bookkeeping that is not the request's work: ``last_used_at``)."""
        async with self.connection(write=True) as connection:
            await connection.run(query, **params)


async def request_data(request: Request) -> Data:
    return state_of(request.app).data


DataDep = Annotated[Data, Depends(request_data)]
"""The reads of a handler that needs no transaction: a page, the caller's own rows."""
