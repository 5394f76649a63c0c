"""The async database layer: the engine (its pool, SQLite's pragmas and write lock, the idle ping), the declarative
base and its column types. Requests read and write through app/core/data.py; the session factory serves tools and
tests."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from app.core.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC; SQLite hands naive values back, we make them aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin: otherwise a SAVEPOINT outside a
    # transaction starts one and its RELEASE commits it, so a failing request would keep rows written in a
    # nested block. BEGIN is then emitted by _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


PING_IDLE_SECONDS = 10.0
"""A pooled connection idle for longer is pinged at checkout; a busy one is not (docs/SCALING.md)."""


def _install_idle_ping(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for idle connections only.

    ``pool_pre_ping`` costs a round trip on every checkout, i.e. on every request. Here a connection that sat
    idle in the pool for over PING_IDLE_SECONDS is pinged (a dead one is replaced before the request sees it,
    as with pre-ping); under load connections never sit that long and no ping is sent. A connection that dies
    while busy fails one statement, which SQLAlchemy reports as a disconnect: it invalidates the whole pool,
    so the next requests reconnect (the request in flight answers 503 ``database_unavailable``).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("idle connection failed its ping") from exc  # the pool connects anew


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE: take the write lock up front, so concurrent writers queue (busy_timeout) instead of failing
    # with "database is locked" when a read snapshot cannot be upgraded. A connection that only reads says so
    # with the execution option ``sqlite_begin="DEFERRED"`` (app/auth/identity.py) and takes no lock. SQLite is
    # the embedded development default; PostgreSQL is what serves real concurrency.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql("BEGIN DEFERRED" if mode == "DEFERRED" else "BEGIN IMMEDIATE")


def connect_args(settings: Settings, *, driver: bool = False) -> dict[str, Any]:
    """asyncpg's connect arguments: for the engine's dialect, or (``driver``) for asyncpg.create_pool."""
    args: dict[str, Any] = {
        "timeout": settings.DATABASE_CONNECT_TIMEOUT,
        "server_settings": {"application_name": "organizations-api"},
    }
    if settings.DATABASE_PGBOUNCER:
        # Transaction-mode poolers cannot keep prepared statements (see docs/SCALING.md).
        args["statement_cache_size"] = 0
        if not driver:  # SQLAlchemy's own statement cache and names
            args["prepared_statement_cache_size"] = 0
            args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
    return args


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.DATABASE_URL
    if url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 15}}
        if ":memory:" in url or url.endswith("sqlite+aiosqlite://"):
            kwargs["poolclass"] = StaticPool
        engine = create_async_engine(url, echo=settings.DATABASE_ECHO, hide_parameters=True, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    engine = create_async_engine(
        url,
        echo=settings.DATABASE_ECHO,
        hide_parameters=True,  # bound values (hashes, token HMACs) stay out of SQL logs and error messages
        pool_size=settings.DATABASE_POOL_SIZE,
        max_overflow=settings.DATABASE_MAX_OVERFLOW,
        pool_timeout=settings.DATABASE_POOL_TIMEOUT,
        pool_recycle=1800,
        connect_args=connect_args(settings),
    )
    _install_idle_ping(engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
