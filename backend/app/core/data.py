"""The one way the app reads and writes: a SQLAlchemy Core statement, compiled once, rows handed out as frozen
values.

A ``Query`` pairs a Core statement with the frozen dataclass its rows become. ``Data`` (``AppState.data``) runs
a read outside any transaction:

- on PostgreSQL, on a connection of the app's asyncpg pool (``Driver``, app/core/driver.py): the statement is
  compiled once for asyncpg and sent as is, each statement committing on its own (no ``BEGIN``/``COMMIT`` round
  trips, no ORM unit of work, no SQLAlchemy execution layer);
- on SQLite (the embedded development database), through SQLAlchemy Core on the engine, in a deferred
  (read-only) transaction that never waits for a writer's lock.

A write runs in a transaction (``Data.transaction``; a handler's is ``TxDep``), on the same pool, with the same
``Query`` objects and the same calls, plus ``commit``, ``savepoint`` and ``attempt``: one statement and one row
type per fact, whichever way it is executed.

Why (docs/SCALING.md, "One data path"): through the ORM session a page paid the unit of work, the identity map
and a transaction of its own, several times the CPU of its SQL; here a page costs its statements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Annotated, Any, Generic, Protocol, TypeVar

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import Select, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from app.core.context import NO_CONTEXT, RequestContext, RequestContextDep
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
    async def run_many(self, query: Query[Any], rows: list[dict[str, Any]]) -> None: ...


class _AsyncpgStatements:
    postgresql = True

    def __init__(self, connection: asyncpg.Connection | None, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    async def _connect(self) -> asyncpg.Connection:
        assert self._connection is not None
        return self._connection

    async def one(self, query: Query[R], **params: Any) -> R | None:
        compiled = query.compiled(self._dialect)
        connection = await self._connect()
        try:
            record = await connection.fetchrow(compiled.sql, *compiled.args(params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(compiled.sql, None, exc) from exc
        return None if record is None else query.row(*record)

    async def all(self, query: Query[R], **params: Any) -> list[R]:
        compiled = query.compiled(self._dialect)
        connection = await self._connect()
        make = query.row
        try:
            records = await connection.fetch(compiled.sql, *compiled.args(params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(compiled.sql, None, exc) from exc
        return [make(*record) for record in records]

    async def value(self, query: Query[Any], **params: Any) -> Any:
        compiled = query.compiled(self._dialect)
        connection = await self._connect()
        try:
            return await connection.fetchval(compiled.sql, *compiled.args(params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(compiled.sql, None, exc) from exc

    async def run(self, query: Query[Any], **params: Any) -> None:
        compiled = query.compiled(self._dialect)
        connection = await self._connect()
        try:
            await connection.execute(compiled.sql, *compiled.args(params))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(compiled.sql, None, exc) from exc

    async def run_many(self, query: Query[Any], rows: list[dict[str, Any]]) -> None:
        """``query`` once per parameter set, in one round trip."""
        compiled = query.compiled(self._dialect)
        connection = await self._connect()
        try:
            await connection.executemany(compiled.sql, [compiled.args(params) for params in rows])
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(compiled.sql, None, exc) from exc


class _CoreStatements:
    """SQLAlchemy Core on a connection (SQLite)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self.postgresql = connection.dialect.name == "postgresql"

    async def _connect(self) -> AsyncConnection:
        return self._connection

    async def one(self, query: Query[R], **params: Any) -> R | None:
        row = (await (await self._connect()).execute(query.statement, params)).one_or_none()
        return None if row is None else query.row(*row)

    async def all(self, query: Query[R], **params: Any) -> list[R]:
        make = query.row
        return [make(*row) for row in await (await self._connect()).execute(query.statement, params)]

    async def value(self, query: Query[Any], **params: Any) -> Any:
        return (await (await self._connect()).execute(query.statement, params)).scalar()

    async def run(self, query: Query[Any], **params: Any) -> None:
        await (await self._connect()).execute(query.statement, params)

    async def run_many(self, query: Query[Any], rows: list[dict[str, Any]]) -> None:
        if rows:
            await (await self._connect()).execute(query.statement, rows)


class Tx(Statements, Protocol):
    """A transaction: every write runs in one, committed when its block ends (rolled back if it raises).

    A request's is ``TxDep``: committed before the response is sent. It knows where the request came from
    (``context``: the audit log's ``ip_address``, a new session's ``user_agent``), so no service takes those
    as parameters. Nothing is sent until the first statement (a request refused before it writes costs no
    ``BEGIN``), and the connection is taken only then, after the caller's and the guard's reads gave theirs back.
    """

    context: RequestContext

    async def commit(self) -> None:
        """Make what was written so far durable now (an audit event that must outlive the 401 raised next);
        the next statement begins a new transaction."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested block rolled back alone when it raises (the transaction goes on)."""

    async def attempt(self, query: Query[Any], **params: Any) -> bool:
        """Run ``query`` in a savepoint: False when a constraint refused it (a concurrent insert won), with the
        rest of the transaction intact, for the caller to raise its precise conflict or try another value."""


class _TxMixin:
    async def attempt(self: Tx, query: Query[Any], **params: Any) -> bool:
        try:
            async with self.savepoint():
                await self.run(query, **params)
        except IntegrityError:
            return False
        return True


class _AsyncpgTx(_TxMixin, _AsyncpgStatements):
    """A transaction on a connection of the asyncpg pool, taken and begun at the first statement."""

    def __init__(self, driver: Driver, dialect: Dialect, context: RequestContext) -> None:
        super().__init__(None, dialect)
        self.context = context
        self._driver = driver
        self._lease: AbstractAsyncContextManager[asyncpg.Connection] | None = None
        self._transaction: Any = None  # asyncpg's Transaction while one is open

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None:
            lease = self._driver.connection()
            self._connection = await lease.__aenter__()
            self._lease = lease
        if self._transaction is None:
            transaction = self._connection.transaction()
            await transaction.start()
            self._transaction = transaction
        return self._connection

    async def commit(self) -> None:
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            await transaction.commit()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        connection = await self._connect()
        async with connection.transaction():  # nested in the open one: SAVEPOINT ... RELEASE / ROLLBACK TO
            yield

    async def finish(self, error: BaseException | None) -> None:
        """Commit (``error`` None) or roll back, then give the connection back to the pool."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        transaction, self._transaction = self._transaction, None
        try:
            if transaction is not None:
                await (transaction.rollback() if error is not None else transaction.commit())
        except BaseException as exc:
            # The pool's lease decides what a failed commit or rollback means (a lost connection: 503).
            if not await lease.__aexit__(type(exc), exc, exc.__traceback__):
                raise
            return
        await lease.__aexit__(*_exc_info(error))


def _exc_info(
    error: BaseException | None,
) -> tuple[type[BaseException] | None, BaseException | None, TracebackType | None]:
    return (None, None, None) if error is None else (type(error), error, error.__traceback__)


class _CoreTx(_TxMixin, _CoreStatements):
    """A transaction through SQLAlchemy Core (SQLite): ``BEGIN IMMEDIATE`` at the first statement."""

    def __init__(self, engine: AsyncEngine, context: RequestContext) -> None:
        self.context = context
        self.postgresql = engine.dialect.name == "postgresql"
        self._engine = engine
        self._open: AsyncConnection | None = None

    async def _connect(self) -> AsyncConnection:
        if self._open is None:
            self._open = await self._engine.connect()
        return self._open

    async def commit(self) -> None:
        if self._open is not None and self._open.in_transaction():
            await self._open.commit()

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        connection = await self._connect()
        async with connection.begin_nested():
            yield

    async def finish(self, error: BaseException | None) -> None:
        connection, self._open = self._open, None
        if connection is None:
            return
        try:
            if connection.in_transaction():
                await (connection.rollback() if error is not None else connection.commit())
        finally:
            await connection.close()


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

    @asynccontextmanager
    async def transaction(self, context: RequestContext = NO_CONTEXT) -> AsyncIterator[Tx]:
        """A transaction (``Tx``) for the block: committed when it ends, rolled back if it raises."""
        tx: _AsyncpgTx | _CoreTx = (
            _AsyncpgTx(self.driver, self.engine.dialect, context)
            if self.driver is not None
            else _CoreTx(self.engine, context)
        )
        try:
            yield tx
        except BaseException as error:
            await tx.finish(error)
            raise
        await tx.finish(None)

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


async def request_transaction(request: Request, context: RequestContextDep) -> AsyncIterator[Tx]:
    """One request, one transaction: committed before the response is sent, rolled back on error."""
    async with state_of(request.app).data.transaction(context) as tx:
        yield tx


TxDep = Annotated[Tx, Depends(request_transaction, scope="function")]
"""The writes of a handler (and the reads a write depends on), in one transaction."""
