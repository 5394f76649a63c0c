"""Who is calling, read outside the request's transaction: the hot path of every authenticated request.

Resolving the caller is one indexed lookup (the session with its user, a Supabase user by ``supabase_id``, or an
organization API key by its prefix with its creator and the creator's current role in the key's organization)
that must be fresh on every request: that is what makes revocation immediate on every worker. Run through the
request's ORM session it cost the ORM's unit of work plus ``BEGIN`` and ``COMMIT`` round trips, most of a
cheap request (docs/SCALING.md). Here each lookup is one statement, built and compiled once:

- on PostgreSQL it runs on a connection of the app's asyncpg pool (app/core/driver.py), outside any
  transaction (one round trip, no ORM, no ``BEGIN``/``COMMIT``);
- on SQLite (the embedded development database) through SQLAlchemy Core in a deferred read transaction.

The ``User`` handed to the endpoint is built from that row and *detached*: reading it needs no session.
Code that changes the caller's row first takes the request session's copy with :func:`attach`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.instrumentation import manager_of_class

from app.auth.models import AuthSession
from app.core.driver import Driver, DriverStatement
from app.orgs.models import ApiKey, Membership
from app.users.models import DeletedSupabaseIdentity, User

USER_COLUMNS = tuple(User.__table__.columns.keys())

SQLITE_READ = {"sqlite_begin": "DEFERRED"}
"""Execution options of a read-only SQLite connection (app.core.db emits ``BEGIN DEFERRED`` for it)."""


@dataclass(frozen=True, slots=True)
class SessionState:
    revoked_at: datetime | None
    expires_at: datetime
    last_used_at: datetime
    aal: str


@dataclass(frozen=True, slots=True)
class ApiKeyState:
    """An API key's row as its lookup reads it, with its creator's current role in the key's organization."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    role: str
    secret_hash: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    creator_role: str


_API_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.org_id,
    ApiKey.name,
    ApiKey.role,
    ApiKey.secret_hash,
    ApiKey.expires_at,
    ApiKey.revoked_at,
    ApiKey.last_used_at,
    Membership.role,
)


class IdentityStore:
    """The caller lookups of one engine (``app.state.identity``, made in the lifespan)."""

    def __init__(self, engine: AsyncEngine, driver: Driver | None = None) -> None:
        self.engine = engine
        self.driver = driver
        user_columns = [User.__table__.c[name] for name in USER_COLUMNS]
        self._session_user = DriverStatement(
            engine.dialect,
            select(
                *user_columns,
                AuthSession.revoked_at,
                AuthSession.expires_at,
                AuthSession.last_used_at,
                AuthSession.aal,
            )
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(AuthSession.id == bindparam("session_id"), User.id == bindparam("user_id")),
        )
        self._supabase_user = DriverStatement(
            engine.dialect, select(*user_columns).where(User.supabase_id == bindparam("supabase_id"))
        )
        self._supabase_deleted_at = DriverStatement(
            engine.dialect,
            select(DeletedSupabaseIdentity.deleted_at).where(
                DeletedSupabaseIdentity.supabase_id == bindparam("supabase_id")
            ),
        )
        # The key, its creator, and the creator's membership of the key's organization: one statement, so that a
        # creator who left or was demoted (or an organization deleted, which cascades to its keys and
        # memberships) is seen on the key's very next use, on every worker, with nothing cached to invalidate.
        self._api_key = DriverStatement(
            engine.dialect,
            select(*user_columns, *_API_KEY_COLUMNS)
            .select_from(ApiKey)
            .join(User, User.id == ApiKey.created_by)
            .join(Membership, (Membership.org_id == ApiKey.org_id) & (Membership.user_id == ApiKey.created_by))
            .where(ApiKey.prefix == bindparam("prefix")),
        )
        self._touch_api_key = DriverStatement(
            engine.dialect,
            update(ApiKey)
            .where(
                ApiKey.id == bindparam("key_id"),
                ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at <= bindparam("stale_before")),
            )
            .values(last_used_at=bindparam("now")),
        )
        self._touch = DriverStatement(
            engine.dialect,
            update(AuthSession).where(AuthSession.id == bindparam("session_id")).values(last_used_at=bindparam("now")),
        )

    async def _fetch_row(self, statement: DriverStatement, params: dict[str, Any]) -> Sequence[Any] | None:
        if self.driver is not None:
            async with self.driver.connection() as connection:
                record: Sequence[Any] | None = await connection.fetchrow(statement.sql, *statement.args(params))
                return record
        async with self.engine.connect() as connection:
            connection = await connection.execution_options(**SQLITE_READ)
            return (await connection.execute(statement.statement, params)).one_or_none()

    async def session_user(self, *, session_id: uuid.UUID, user_id: uuid.UUID) -> tuple[User, SessionState] | None:
        """The user of one of this API's sessions with the session's state; None when either is gone."""
        row = await self._fetch_row(self._session_user, {"session_id": session_id, "user_id": user_id})
        if row is None:
            return None
        n = len(USER_COLUMNS)
        state = SessionState(revoked_at=row[n], expires_at=row[n + 1], last_used_at=row[n + 2], aal=row[n + 3])
        return detached_user(row[:n]), state

    async def supabase_user(self, supabase_id: uuid.UUID) -> User | None:
        row = await self._fetch_row(self._supabase_user, {"supabase_id": supabase_id})
        return None if row is None else detached_user(row)

    async def supabase_deleted_at(self, supabase_id: uuid.UUID) -> datetime | None:
        """When the account of this Supabase user was deleted here (its tombstone), or None."""
        row = await self._fetch_row(self._supabase_deleted_at, {"supabase_id": supabase_id})
        if row is None:
            return None
        return _aware(row[0])

    async def api_key(self, prefix: str) -> tuple[User, ApiKeyState] | None:
        """The creator and state of the key with this prefix; None when there is no such key, or its creator is
        no longer a member of its organization."""
        row = await self._fetch_row(self._api_key, {"prefix": prefix})
        if row is None:
            return None
        n = len(USER_COLUMNS)
        key_id, org_id, *rest = row[n:]
        state = ApiKeyState(_uuid(key_id), _uuid(org_id), *rest)
        return detached_user(row[:n]), state

    async def _write(self, statement: DriverStatement, params: dict[str, Any]) -> None:
        """One statement, committed at once (bookkeeping, not the request's work)."""
        if self.driver is not None:
            async with self.driver.connection() as connection:
                await connection.execute(statement.sql, *statement.args(params))
            return
        async with self.engine.begin() as connection:
            await connection.execute(statement.statement, params)

    async def touch_session(self, session_id: uuid.UUID, now: datetime) -> None:
        """``last_used_at = now``."""
        await self._write(self._touch, {"session_id": session_id, "now": now})

    async def touch_api_key(self, key_id: uuid.UUID, now: datetime, stale_before: datetime) -> None:
        """``last_used_at = now`` unless another request (on any worker) did so since ``stale_before``."""
        await self._write(self._touch_api_key, {"key_id": key_id, "now": now, "stale_before": stale_before})


def _uuid(value: Any) -> uuid.UUID:
    """asyncpg hands back its own UUID type; the rest of the app compares and hashes ``uuid.UUID``."""
    return value if type(value) is uuid.UUID else uuid.UUID(str(value))


def _aware(value: datetime) -> datetime:
    """asyncpg reads timestamptz as aware; SQLite's Core path goes through UTCDateTime (aware too)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_USER_MANAGER = manager_of_class(User)


def detached_user(values: Sequence[Any]) -> User:
    """A ``User`` holding every column of a row, detached (persistent identity, no session).

    Built as the ORM's own loader builds instances (the row's values placed directly, not set one attribute
    event at a time through ``__init__``), which takes less than half the time on this hot path."""
    user: User = _USER_MANAGER.new_instance()
    user.__dict__.update(zip(USER_COLUMNS, values, strict=True))
    make_transient_to_detached(user)
    return user


async def attach(session: AsyncSession, user: User) -> User:
    """The request session's instance of ``user`` (the caller is read outside it), so that changes to it are
    flushed with the request's transaction. Use the returned object."""
    if user in session:
        return user
    return await session.merge(user, load=False)
