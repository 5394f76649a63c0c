"""Account lifecycle: deleting an account and exporting everything kept about it (docs/ACCOUNTS.md).

``delete_account`` is the one implementation behind ``DELETE /users/me`` and ``DELETE /admin/users/{id}``:
the same locks, the same ``sole_owner`` and ``last_superuser`` rules, the same erasure and audit event.

Locks, in one order (everyone else takes them in this order too, so no deadlock):
1. the active superusers (only when the user is one: the admin service's ``last_superuser`` lock);
2. every organization the user belongs to, in id order, with the lock the last-owner rule takes
   (``org_service.lock_orgs_of``): an ownership transfer, a demotion or another owner leaving runs wholly
   before or wholly after the deletion, which decides on the roles as they are then;
3. the user's row ``FOR UPDATE``: nothing can reference the user any more (a new membership, session,
   invitation waits, then fails) until the deletion commits.

Nothing is revoked lazily: the user's sessions rows are deleted with it, and every worker reads the session
(or, for Supabase tokens, the user by ``supabase_id``) on every request, so every access and refresh token
is refused on its very next use (docs/SCALING.md, "Revocation stays immediate"). A Supabase user leaves a
tombstone (``DeletedSupabaseIdentity``) so that a Supabase token issued before the deletion cannot
provision the account again (app/auth/supabase.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, bindparam, delete, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.dependencies import Principal
from app.auth.exceptions import ReauthenticationRequiredError
from app.auth.models import AuthSession, MfaFactor, MfaRecoveryCode, RevokeReason
from app.core.data import SQLITE_READ, Query, Tx, scalar
from app.core.db import utcnow
from app.credits.models import CreditTransaction
from app.orgs import service as org_service
from app.orgs.exceptions import SoleOwnerError
from app.orgs.models import ApiKey, Invitation, Membership, Organization
from app.users import service as user_service
from app.users.exceptions import UserNotFoundError
from app.users.models import USER_COLUMNS, DeletedSupabaseIdentity, Profile, User, UserRow

REAUTHENTICATION_WINDOW = timedelta(minutes=5)
"""A Supabase token deletes its account only when issued this recently (``iat``)."""

EXPORT_BATCH = 1000
"""Rows read (and written to the response) at a time: the export's memory does not grow with the ledger."""

EXPORT_FORMAT = "organizations-api/account-export"
EXPORT_VERSION = 1


# --- deletion -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deletion:
    user_id: uuid.UUID
    sessions_ended: int
    deleted_org_ids: list[uuid.UUID]
    audit_events_erased: int


async def check_reauthentication(tx: Tx, principal: Principal, *, current_password: str | None) -> None:
    """The caller proves again that it is them before their account goes: the current password for an account
    with one (401 ``invalid_credentials`` when wrong, like an email change; the failure is audited and
    committed), else a Supabase token issued in the last 5 minutes (401 ``reauthentication_required``)."""
    user = principal.user
    if auth_service.is_own_account(user):
        if current_password is None:
            raise ReauthenticationRequiredError("Send current_password to delete this account.")
        await auth_service.reauthenticate(tx, user=user, password=current_password, failed_action="user.delete_failed")
        return
    issued_at = principal.issued_at
    if issued_at is None or utcnow() - issued_at > REAUTHENTICATION_WINDOW:
        raise ReauthenticationRequiredError()


_USERS = cast(Table, User.__table__)
# FOR UPDATE (not the key-share lock of a login): nothing can reference the user any more (a new membership,
# session, invitation waits, then fails) until the deletion commits.
_LOCKED = Query(select(*USER_COLUMNS).where(_USERS.c.id == bindparam("user_id")).with_for_update(), UserRow)
_TOMBSTONE_INSERT = postgresql.insert(DeletedSupabaseIdentity).values(
    supabase_id=bindparam("supabase_id"), deleted_at=bindparam("now")
)
# Deleted once more (signed up again meanwhile): the newer time. ON CONFLICT renders on SQLite as on PostgreSQL.
_TOMBSTONE = Query(
    _TOMBSTONE_INSERT.on_conflict_do_update(
        index_elements=["supabase_id"], set_={"deleted_at": _TOMBSTONE_INSERT.excluded.deleted_at}
    ),
    scalar,
)
_DELETE_SENT_INVITATIONS = Query(delete(Invitation).where(Invitation.invited_by == bindparam("user_id")), scalar)
# The rows that reference the user go by their foreign keys' ON DELETE CASCADE: profile, sessions, email tokens,
# MFA rows, memberships, ledger.
_DELETE_USER = Query(delete(User).where(User.id == bindparam("user_id")), scalar)


async def delete_account(
    tx: Tx,
    *,
    user_id: uuid.UUID,
    actor_id: uuid.UUID,
    force: bool = False,
    refuse_alone: bool = False,
) -> Deletion:
    """Delete a user with everything that is theirs, in the caller's transaction (all or nothing).

    - 409 ``last_superuser`` for the last active superuser; 404 ``user_not_found``;
    - organizations they alone belong to are deleted with them; 409 ``sole_owner`` while they are the last
      owner of an organization where others remain, unless ``force`` (admins only) deletes those too;
    - ``refuse_alone`` (an admin deleting someone else): the organizations they alone belong to are refused
      too (409 ``sole_owner``) unless ``force``, so that an admin never deletes somebody's organization
      without saying so; a user deleting themself has said so, and theirs go with them;
    - deleted: the user, profile, sessions (every token of them), email tokens, MFA factor, recovery codes and
      challenges, memberships, the invitations they sent, their credit ledger;
    - kept: audit events, with the user's addresses erased (``audit.erase_addresses``), and one more event:
      ``user.deleted`` (by themself) or ``admin.user_deleted`` (``actor_id`` another user), without the email.
    """
    found = await user_service.get_user(tx, user_id)
    if found.is_superuser and found.is_active:
        await user_service.ensure_another_superuser(tx, losing=user_id)
    await org_service.lock_orgs_of(tx, user_id)
    user = await tx.one(_LOCKED, user_id=user_id)
    if user is None:
        raise UserNotFoundError()
    # An organization joined between the first lock and the user's row lock (after which nobody can join
    # one): locked too, out of order, a window of a few statements. Rows already held are no-ops.
    await org_service.lock_orgs_of(tx, user_id)
    plan = await org_service.departure(tx, user_id)
    refused = plan.sole_owner + plan.alone if refuse_alone else plan.sole_owner
    if refused and not force:
        raise SoleOwnerError()
    doomed = sorted(set(plan.alone) | (set(plan.sole_owner) if force else set()))
    for org_id in doomed:
        await org_service.delete_org(tx, org_id, actor_id)
    ended = await auth_service.revoke_user_sessions(tx, user_id=user_id, reason=RevokeReason.USER_DELETED)
    await tx.run(_DELETE_SENT_INVITATIONS, user_id=user_id)
    if user.supabase_id is not None:
        await tx.run(_TOMBSTONE, supabase_id=user.supabase_id, now=utcnow())
    await tx.run(_DELETE_USER, user_id=user_id)
    erased = await audit.erase_addresses(tx, user_id=user_id, email=user.email)
    await audit.record(
        tx,
        "user.deleted" if actor_id == user_id else "admin.user_deleted",
        actor_id=actor_id,
        subject_user_id=user_id,
        details={
            "sessions_ended": len(ended),
            "deleted_org_ids": [str(org_id) for org_id in doomed],
            "supabase": user.supabase_id is not None,
        },
    )
    return Deletion(user_id=user_id, sessions_ended=len(ended), deleted_org_ids=doomed, audit_events_erased=erased)


# --- export ---------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


USER_FIELDS = (
    "id",
    "email",
    "full_name",
    "is_active",
    "is_superuser",
    "is_verified",
    "auth_provider",
    "supabase_id",
    "mfa_enabled",
    "created_at",
    "updated_at",
)
PROFILE_FIELDS = ("full_name", "avatar_url", "credits", "created_at", "updated_at")
SESSION_FIELDS = (
    "id",
    "device_name",
    "user_agent",
    "ip_address",
    "aal",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
)
LEDGER_FIELDS = ("id", "amount", "balance_after", "reason", "actor_id", "idempotency_key", "created_at")
AUDIT_FIELDS = (
    "id",
    "action",
    "actor_id",
    "actor_api_key_id",
    "subject_user_id",
    "org_id",
    "ip_address",
    "details",
    "created_at",
)
API_KEY_FIELDS = ("id", "org_id", "name", "role", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at")
INVITATION_FIELDS = ("id", "org_id", "email", "role", "created_at", "expires_at", "accepted_at", "revoked_at")
# Never exported (secrets, hashes, tokens): users.hashed_password, auth_sessions.token_salt/generation, every
# *_hash column (api_keys.secret_hash included), mfa_factors.secret_encrypted, recovery codes, idempotency
# request hashes.


def _row(fields: Sequence[str], row: Any) -> dict[str, Any]:
    mapping = row._mapping
    return {name: mapping[name] for name in fields}


def _columns(model: Any, fields: Sequence[str]) -> list[Any]:
    return [getattr(model, name) for name in fields]


async def _keyset(
    connection: AsyncConnection,
    model: Any,
    fields: Sequence[str],
    where: ColumnElement[bool],
    *,
    batch: int,
) -> AsyncIterator[list[dict[str, Any]]]:
    """The rows matching ``where``, oldest first, ``batch`` at a time: each page starts after the last row of
    the previous one (``created_at``, then ``id``), so every page is one short index range scan; no offset,
    and never more than ``batch`` rows in memory."""
    created, ident = model.created_at, model.id
    columns = _columns(model, fields)
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query: Select[Any] = select(*columns).where(where)
        if after is not None:
            last_created, last_id = after
            query = query.where(created >= last_created, or_(created > last_created, ident > last_id))
        rows = (await connection.execute(query.order_by(created, ident).limit(batch))).all()
        if not rows:
            return
        yield [_row(fields, row) for row in rows]
        if len(rows) < batch:
            return
        last = rows[-1]._mapping
        after = (last["created_at"], last["id"])


async def _one(connection: AsyncConnection, query: Select[Any], fields: Sequence[str]) -> dict[str, Any] | None:
    row = (await connection.execute(query)).one_or_none()
    return None if row is None else _row(fields, row)


async def _read_transaction(engine: AsyncEngine) -> AsyncConnection:
    """One consistent snapshot for the whole document: REPEATABLE READ on PostgreSQL (read only), a deferred
    (read) transaction on SQLite (WAL: a snapshot too)."""
    connection = await engine.connect()
    if engine.dialect.name == "postgresql":
        connection = await connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    else:
        connection = await connection.execution_options(**SQLITE_READ)
    await connection.begin()
    return connection


async def export_document(
    engine: AsyncEngine, user_id: uuid.UUID, *, batch: int = EXPORT_BATCH
) -> AsyncIterator[bytes]:
    """The account export as one JSON document (``AccountExport`` in app/users/schemas.py), written piece by
    piece: the small parts at once, the sessions, credit ledger and audit events ``batch`` rows at a time
    (keyset pages on their ``(user_id, created_at)`` indexes). Memory stays flat however long the ledger is
    (docs/SCALING.md, "Account export")."""
    connection = await _read_transaction(engine)
    try:
        user = await _one(connection, select(*_columns(User, USER_FIELDS)).where(User.id == user_id), USER_FIELDS)
        if user is None:  # deleted since the caller was resolved
            yield b"{}"
            return
        profile = await _one(
            connection, select(*_columns(Profile, PROFILE_FIELDS)).where(Profile.id == user_id), PROFILE_FIELDS
        )
        enrolled_at = await connection.scalar(select(MfaFactor.created_at).where(MfaFactor.user_id == user_id))
        codes_left = await connection.scalar(
            select(func.count())
            .select_from(MfaRecoveryCode)
            .where(MfaRecoveryCode.user_id == user_id, MfaRecoveryCode.used_at.is_(None))
        )
        memberships = [
            {"org_id": org_id, "name": name, "slug": slug, "role": role, "joined_at": joined_at}
            for org_id, name, slug, role, joined_at in await connection.execute(
                select(Organization.id, Organization.name, Organization.slug, Membership.role, Membership.created_at)
                .join(Membership, Membership.org_id == Organization.id)
                .where(Membership.user_id == user_id)
                .order_by(Membership.created_at, Organization.id)
            )
        ]
        invitations = [
            _row(INVITATION_FIELDS, row)
            for row in await connection.execute(
                select(*_columns(Invitation, INVITATION_FIELDS))
                .where(Invitation.invited_by == user_id)
                .order_by(Invitation.created_at, Invitation.id)
            )
        ]
        api_keys = [
            _row(API_KEY_FIELDS, row)
            for row in await connection.execute(
                select(*_columns(ApiKey, API_KEY_FIELDS))
                .where(ApiKey.created_by == user_id)
                .order_by(ApiKey.created_at, ApiKey.id)
            )
        ]
        head = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": utcnow(),
            "user": user,
            "profile": profile,
            "mfa": {
                "enabled": bool(user["mfa_enabled"]),
                "enrolled_at": enrolled_at if user["mfa_enabled"] else None,
                "recovery_codes_left": int(codes_left or 0) if user["mfa_enabled"] else 0,
            },
            "memberships": memberships,
            "invitations_sent": invitations,
            "api_keys_created": api_keys,
        }
        yield _dumps(head)[:-1].encode()  # the object stays open for the long lists that follow
        lists: list[tuple[str, list[tuple[Any, Sequence[str], ColumnElement[bool]]]]] = [
            ("sessions", [(AuthSession, SESSION_FIELDS, AuthSession.user_id == user_id)]),
            ("credit_ledger", [(CreditTransaction, LEDGER_FIELDS, CreditTransaction.user_id == user_id)]),
            (
                "audit_events",
                [
                    # Two index ranges (actor, then subject without the caller as actor): no event twice.
                    (AuditEvent, AUDIT_FIELDS, AuditEvent.actor_id == user_id),
                    (
                        AuditEvent,
                        AUDIT_FIELDS,
                        and_(
                            AuditEvent.subject_user_id == user_id,
                            or_(AuditEvent.actor_id.is_(None), AuditEvent.actor_id != user_id),
                        ),
                    ),
                ],
            ),
        ]
        for name, sources in lists:
            yield f',"{name}":['.encode()
            first = True
            for model, fields, where in sources:
                async for rows in _keyset(connection, model, fields, where, batch=batch):
                    text = ",".join(_dumps(row) for row in rows)
                    yield (text if first else "," + text).encode()
                    first = False
            yield b"]"
        yield b"}"
    finally:
        await connection.rollback()
        await connection.close()


def export_filename(user_id: uuid.UUID) -> str:
    return f"account-export-{user_id}-{utcnow():%Y%m%d}.json"
