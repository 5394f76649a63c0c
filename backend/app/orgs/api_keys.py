"""Organization API keys: machine access for an organization's own tooling (docs/ORGANIZATIONS.md).

A key is created by an admin or owner (a person: the route's guard refuses keys), with a role that the policy
checks as a granted role (``admin`` or ``member``, never above the creator's). The key itself is returned once;
the database keeps its prefix (the lookup column) and an HMAC of it (app/core/security.py). Using a key is the
caller's lookup (app/auth/identity.py, app/auth/dependencies.py), which also reads its creator's current role:
a key dies with its revocation, its expiry, its organization, or its creator leaving or losing admin rights.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from app.audit import service as audit
from app.core import security
from app.core.data import Data, Query, Tx, paged, scalar
from app.core.db import utcnow
from app.core.settings import Settings
from app.orgs import policy
from app.orgs.exceptions import ApiKeyNotFoundError
from app.orgs.models import ApiKey, OrgRole
from app.orgs.policy import Action, Actor

PREFIX_ATTEMPTS = 3  # 48 random bits: a second collision in a row would mean a broken random source


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: uuid.UUID
    name: str
    role: str
    prefix: str
    created_by: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


_KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.role,
    ApiKey.prefix,
    ApiKey.created_by,
    ApiKey.created_at,
    ApiKey.expires_at,
    ApiKey.last_used_at,
)
_LISTED = (ApiKey.org_id == bindparam("org_id"), ApiKey.revoked_at.is_(None))
_KEYS_COUNT = Query(select(func.count()).select_from(ApiKey).where(*_LISTED), scalar)
_KEYS = Query(
    paged(select(*_KEY_COLUMNS)).where(*_LISTED).order_by(ApiKey.created_at.desc(), ApiKey.id),
    ApiKeyRow,
)


async def list_api_keys(data: Data, *, org_id: uuid.UUID, limit: int, offset: int) -> tuple[list[ApiKeyRow], int]:
    """The organization's keys that are not revoked (expired ones included: ``expires_at`` says so), newest first."""
    return await data.page(_KEYS_COUNT, _KEYS, org_id=org_id, limit=limit, offset=offset)


# ON CONFLICT DO NOTHING (renders on SQLite too): a prefix already taken is no row, and the transaction goes on.
_NEW_KEY = Query(
    postgresql.insert(ApiKey)
    .values(
        org_id=bindparam("org"),
        created_by=bindparam("creator"),
        name=bindparam("key_name"),
        role=bindparam("key_role"),
        prefix=bindparam("key_prefix"),
        secret_hash=bindparam("digest"),
        created_at=bindparam("now"),
        expires_at=bindparam("expires"),
    )
    .on_conflict_do_nothing()
    .returning(*_KEY_COLUMNS),
    ApiKeyRow,
)


async def create_api_key(
    tx: Tx, settings: Settings, *, actor: Actor, name: str, role: OrgRole, expires_in_days: int | None
) -> tuple[ApiKeyRow, str]:
    """A new key and its text (returned once)."""
    policy.require(policy.decide(actor.role, Action.CREATE_API_KEY, role=role))
    now = utcnow()
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    for _ in range(PREFIX_ATTEMPTS):
        prefix, key = security.new_api_key(settings)
        api_key = await tx.one(
            _NEW_KEY,
            org=actor.org_id,
            creator=actor.user_id,
            key_name=name,
            key_role=role,
            key_prefix=prefix,
            digest=security.api_key_hash(settings, key),
            now=now,
            expires=expires_at,
        )
        if api_key is not None:
            break
    else:
        raise RuntimeError("no free API key prefix")
    await audit.record(
        tx,
        "api_key.created",
        by=actor,
        org_id=actor.org_id,
        details={
            "api_key_id": str(api_key.id),
            "name": name,
            "role": role,
            "prefix": prefix,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return api_key, key


def _revoking(which: ColumnElement[bool]) -> Query[tuple[uuid.UUID, str, str, str]]:
    """Revoke the organization's live keys matching ``which``: one conditional UPDATE (the keys' next lookup, on
    any worker, sees ``revoked_at``), answering what it revoked."""
    return Query(
        update(ApiKey)
        .where(ApiKey.org_id == bindparam("org"), ApiKey.revoked_at.is_(None), which)
        .values(revoked_at=bindparam("now"))
        .returning(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.role),
        lambda *values: values,
    )


_REVOKE_KEY = _revoking(ApiKey.id == bindparam("key"))
_REVOKE_KEYS_OF = _revoking(ApiKey.created_by == bindparam("creator"))


async def _revoke(
    tx: Tx, query: Query[tuple[uuid.UUID, str, str, str]], *, actor: Actor, reason: str, **which: Any
) -> int:
    """Run a ``_revoking`` query, one ``api_key.revoked`` event per key. Returns how many."""
    rows = await tx.all(query, org=actor.org_id, now=utcnow(), **which)
    for key_id, name, prefix, role in rows:
        await audit.record(
            tx,
            "api_key.revoked",
            by=actor,
            org_id=actor.org_id,
            details={"api_key_id": str(key_id), "name": name, "prefix": prefix, "role": role, "reason": reason},
        )
    return len(rows)


async def revoke_api_key(tx: Tx, *, actor: Actor, key_id: uuid.UUID) -> None:
    """Any admin or owner revokes any key of the organization (revoking only ever takes power away); 404 unless
    the key is live here."""
    if not await _revoke(tx, _REVOKE_KEY, actor=actor, reason="revoked", key=key_id):
        raise ApiKeyNotFoundError()


async def revoke_keys_of(tx: Tx, *, actor: Actor, user_id: uuid.UUID, reason: str) -> None:
    """Revoke the live keys ``user_id`` created in the actor's organization: they lost the right to hold them
    (demoted below admin, removed, or left). The caller's lookup already refuses such keys (it joins the
    creator's current role); this makes their death final, so that promoting the creator again revives none."""
    await _revoke(tx, _REVOKE_KEYS_OF, actor=actor, reason=reason, creator=user_id)
