"""Who is calling, read outside the request's transaction: the hot path of every authenticated request.

Resolving the caller is one indexed lookup (the session with its user, a Supabase user by ``supabase_id``, or an
organization API key by its prefix with its creator and the creator's current role in the key's organization)
that must be fresh on every request: that is what makes revocation immediate on every worker. Each is a
``Query`` of app/core/data.py: on PostgreSQL one statement on the app's asyncpg pool, outside any transaction
(one round trip); on SQLite a deferred read transaction. The caller is handed out as a frozen ``UserRow``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from app.auth.models import AuthSession
from app.core.data import Data, Query
from app.orgs.models import ApiKey, Membership
from app.users.models import USER_COLUMNS, DeletedSupabaseIdentity, User, UserRow


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


_N = len(USER_COLUMNS)


def _uuid(value: Any) -> uuid.UUID:
    """asyncpg hands back its own UUID type; the rest of the app compares and hashes ``uuid.UUID``."""
    return value if type(value) is uuid.UUID else uuid.UUID(str(value))


def _aware(value: datetime) -> datetime:
    """asyncpg reads timestamptz as aware; SQLite's Core path goes through UTCDateTime (aware too)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _caller(*values: Any) -> tuple[UserRow, SessionState]:
    return UserRow(*values[:_N]), SessionState(*values[_N:])


def _key_caller(*values: Any) -> tuple[UserRow, ApiKeyState]:
    key_id, org_id, *rest = values[_N:]
    return UserRow(*values[:_N]), ApiKeyState(_uuid(key_id), _uuid(org_id), *rest)


SESSION_USER = Query(
    select(*USER_COLUMNS, AuthSession.revoked_at, AuthSession.expires_at, AuthSession.last_used_at, AuthSession.aal)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(AuthSession.id == bindparam("session_id"), User.id == bindparam("user_id")),
    _caller,
)
"""The user of one of this API's sessions with the session's state; no row when either is gone."""

SUPABASE_USER = Query(select(*USER_COLUMNS).where(User.supabase_id == bindparam("supabase_id")), UserRow)
"""The local user of a Supabase ``sub``: the one lookup, on every request and inside first-sight provisioning."""

SUPABASE_DELETED_AT = Query(
    select(DeletedSupabaseIdentity.deleted_at).where(DeletedSupabaseIdentity.supabase_id == bindparam("supabase_id")),
    _aware,
)
"""When the account of a Supabase user was deleted here (its tombstone); no row when it was not."""


def _supabase_caller(*values: Any) -> tuple[UserRow, datetime | None]:
    deleted_at = values[_N]
    return UserRow(*values[:_N]), None if deleted_at is None else _aware(deleted_at)


SUPABASE_CALLER = Query(
    select(
        *USER_COLUMNS,
        select(DeletedSupabaseIdentity.deleted_at)
        .where(DeletedSupabaseIdentity.supabase_id == User.supabase_id)
        .scalar_subquery(),
    ).where(User.supabase_id == bindparam("supabase_id")),
    _supabase_caller,
)
"""A Supabase caller's user and, in the same round trip, the tombstone of an earlier account of that ``sub`` (when
the token predates this account, a tombstone newer than the token refuses it)."""

API_KEY = Query(
    select(
        *USER_COLUMNS,
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
    .select_from(ApiKey)
    .join(User, User.id == ApiKey.created_by)
    .join(Membership, (Membership.org_id == ApiKey.org_id) & (Membership.user_id == ApiKey.created_by))
    .where(ApiKey.prefix == bindparam("prefix")),
    _key_caller,
)
"""The key with a prefix, its creator, and the creator's membership of the key's organization: one statement, so
that a creator who left or was demoted (or an organization deleted, which cascades to its keys and memberships)
is seen on the key's very next use, on every worker, with nothing cached to invalidate. No row when there is no
such key or its creator is no longer a member."""

_TOUCH = Query(
    update(AuthSession).where(AuthSession.id == bindparam("session_id")).values(last_used_at=bindparam("now")),
    lambda *_: None,
)
_TOUCH_API_KEY = Query(
    update(ApiKey)
    .where(
        ApiKey.id == bindparam("key_id"),
        ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at <= bindparam("stale_before")),
    )
    .values(last_used_at=bindparam("now")),
    lambda *_: None,
)


async def session_user(data: Data, *, session_id: uuid.UUID, user_id: uuid.UUID) -> tuple[UserRow, SessionState] | None:
    return await data.one(SESSION_USER, session_id=session_id, user_id=user_id)


async def touch_session(data: Data, session_id: uuid.UUID, now: datetime) -> None:
    """``last_used_at = now``: one statement, committed at once (it is bookkeeping, not the request's work)."""
    await data.run(_TOUCH, session_id=session_id, now=now)


async def touch_api_key(data: Data, key_id: uuid.UUID, now: datetime, stale_before: datetime) -> None:
    """``last_used_at = now`` unless another request (on any worker) did so since ``stale_before``."""
    await data.run(_TOUCH_API_KEY, key_id=key_id, now=now, stale_before=stale_before)
