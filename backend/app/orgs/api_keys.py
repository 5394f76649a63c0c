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

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from app.audit import service as audit
from app.core import security
from app.core.data import Data, Query, paged, scalar
from app.core.db import flush_unique, utcnow
from app.core.settings import Settings
from app.orgs import policy
from app.orgs.exceptions import ApiKeyNotFoundError
from app.orgs.models import ApiKey, OrgRole
from app.orgs.policy import Action, Actor

PREFIX_ATTEMPTS = 3  # 48 random bits: a second collision in a row would mean a broken random source


async def create_api_key(
    session: AsyncSession,
    settings: Settings,
    *,
    actor: Actor,
    name: str,
    role: OrgRole,
    expires_in_days: int | None,
    ip_address: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its text (returned once)."""
    policy.require(policy.decide(actor.role, Action.CREATE_API_KEY, role=role))
    now = utcnow()
    for _ in range(PREFIX_ATTEMPTS):
        prefix, key = security.new_api_key(settings)
        api_key = ApiKey(
            org_id=actor.org_id,
            created_by=actor.user_id,
            name=name,
            role=role,
            prefix=prefix,
            secret_hash=security.api_key_hash(settings, key),
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        if await flush_unique(session, api_key):
            break
    else:
        raise RuntimeError("no free API key prefix")
    await audit.record(
        session,
        "api_key.created",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={
            "api_key_id": str(api_key.id),
            "name": name,
            "role": role,
            "prefix": prefix,
            "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
        },
    )
    return api_key, key


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


_LISTED = (ApiKey.org_id == bindparam("org_id"), ApiKey.revoked_at.is_(None))
_KEYS_COUNT = Query(select(func.count()).select_from(ApiKey).where(*_LISTED), scalar)
_KEYS = Query(
    paged(
        select(
            ApiKey.id,
            ApiKey.name,
            ApiKey.role,
            ApiKey.prefix,
            ApiKey.created_by,
            ApiKey.created_at,
            ApiKey.expires_at,
            ApiKey.last_used_at,
        )
    )
    .where(*_LISTED)
    .order_by(ApiKey.created_at.desc(), ApiKey.id),
    ApiKeyRow,
)


async def list_api_keys(data: Data, *, org_id: uuid.UUID, limit: int, offset: int) -> tuple[list[ApiKeyRow], int]:
    """The organization's keys that are not revoked (expired ones included: ``expires_at`` says so), newest first."""
    return await data.page(_KEYS_COUNT, _KEYS, org_id=org_id, limit=limit, offset=offset)


async def _revoke(
    session: AsyncSession,
    *,
    actor: Actor,
    which: ColumnElement[bool],
    reason: str,
    ip_address: str | None,
) -> int:
    """Revoke the organization's live keys matching ``which`` with one conditional UPDATE (the keys' next lookup,
    on any worker, sees ``revoked_at``), one ``api_key.revoked`` event each. Returns how many."""
    revoked = await session.execute(
        update(ApiKey)
        .where(ApiKey.org_id == actor.org_id, ApiKey.revoked_at.is_(None), which)
        .values(revoked_at=utcnow())
        .returning(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.role)
        .execution_options(synchronize_session=False)
    )
    rows = revoked.all()
    for key_id, name, prefix, role in rows:
        await audit.record(
            session,
            "api_key.revoked",
            actor_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            org_id=actor.org_id,
            ip_address=ip_address,
            details={"api_key_id": str(key_id), "name": name, "prefix": prefix, "role": role, "reason": reason},
        )
    return len(rows)


async def revoke_api_key(
    session: AsyncSession, *, actor: Actor, key_id: uuid.UUID, ip_address: str | None = None
) -> None:
    """Any admin or owner revokes any key of the organization (revoking only ever takes power away); 404 unless
    the key is live here."""
    if not await _revoke(session, actor=actor, which=ApiKey.id == key_id, reason="revoked", ip_address=ip_address):
        raise ApiKeyNotFoundError()


async def revoke_keys_of(
    session: AsyncSession, *, actor: Actor, user_id: uuid.UUID, reason: str, ip_address: str | None = None
) -> None:
    """Revoke the live keys ``user_id`` created in the actor's organization: they lost the right to hold them
    (demoted below admin, removed, or left). The caller's lookup already refuses such keys (it joins the
    creator's current role); this makes their death final, so that promoting the creator again revives none."""
    await _revoke(session, actor=actor, which=ApiKey.created_by == user_id, reason=reason, ip_address=ip_address)
