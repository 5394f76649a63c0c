"""Users and profiles: lookups, creation, the profile get-or-create."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql

from app.auth.exceptions import InvalidCredentialsError
from app.core.data import Data, Query, Statements, Tx, scalar
from app.core.db import new_id, utcnow
from app.core.emails import normalize_email
from app.core.updates import Update, sent_values
from app.credits import service as credit_service
from app.users.exceptions import EmailTakenError, LastSuperuserError, ProfileNotFoundError, UserNotFoundError
from app.users.models import USER_COLUMNS, AuthProvider, Profile, User, UserRow
from app.users.schemas import ProfileUpdate, UserUpdate

SIGNUP_CREDITS_REASON = "signup_bonus"


_USERS = cast(Table, User.__table__)
_USER = Query(select(*USER_COLUMNS).where(_USERS.c.id == bindparam("user_id")), UserRow)
# FOR NO KEY UPDATE (PostgreSQL; not rendered on SQLite): rows that reference the user (a new session) can still be
# inserted meanwhile, and no deadlock arises with their key-share locks.
_LOCKED_USER = Query(
    select(*USER_COLUMNS).where(_USERS.c.id == bindparam("user_id")).with_for_update(key_share=True), UserRow
)
_USER_BY_EMAIL = Query(select(*USER_COLUMNS).where(_USERS.c.email == bindparam("email")), UserRow)
_ACTIVE_SUPERUSERS = Query(
    select(_USERS.c.id)
    .where(_USERS.c.is_superuser.is_(True), _USERS.c.is_active.is_(True))
    .order_by(_USERS.c.id)
    .with_for_update(key_share=True),
    scalar,
)
# ON CONFLICT DO NOTHING (any unique key) renders on SQLite as on PostgreSQL: a taken email returns no row, with
# no savepoint and the transaction intact. Parameters by column name.
_NEW_USER = Query(postgresql.insert(_USERS).on_conflict_do_nothing().returning(*USER_COLUMNS), UserRow)
_UPDATE_USER = Update(User, returning=USER_COLUMNS, row=UserRow)
_UPGRADE_HASH = Query(
    update(_USERS)
    .where(_USERS.c.id == bindparam("user_id"), _USERS.c.hashed_password == bindparam("verified"))
    .values(hashed_password=bindparam("upgraded")),
    lambda *_: None,
)


async def find_user(statements: Statements, user_id: uuid.UUID) -> UserRow | None:
    return await statements.one(_USER, user_id=user_id)


async def get_user(statements: Statements, user_id: uuid.UUID) -> UserRow:
    user = await find_user(statements, user_id)
    if user is None:
        raise UserNotFoundError()
    return user


async def _lock_active_superusers(tx: Tx) -> set[uuid.UUID]:
    """Ids of the active superusers, their rows locked (PostgreSQL) until the transaction ends.

    Two superusers demoting, deactivating or deleting each other at once are serialized here: the second
    one re-reads the rows after the first commits and sees who is left. ``FOR NO KEY UPDATE``: rows that
    reference a superuser (a session, an invitation they send) can still be inserted meanwhile.
    """
    return set(await tx.all(_ACTIVE_SUPERUSERS))


async def ensure_another_superuser(tx: Tx, *, losing: uuid.UUID) -> None:
    """409 ``last_superuser`` when ``losing`` is the last active superuser (demoted, deactivated or deleted)."""
    active = await _lock_active_superusers(tx)
    if losing in active and not active - {losing}:
        raise LastSuperuserError()


async def find_locked_user(tx: Tx, user_id: uuid.UUID) -> UserRow | None:
    """The user's row locked as by ``lock_user``, or None when there is no such user."""
    return await tx.one(_LOCKED_USER, user_id=user_id)


async def lock_user(tx: Tx, user_id: uuid.UUID) -> UserRow:
    """The user's row, locked until the transaction ends: serializes a user's logins (counting their live
    sessions and ending the surplus is one step) and MFA changes. ``FOR NO KEY UPDATE`` on PostgreSQL, so
    rows that reference the user (a new session) can still be inserted meanwhile and no deadlock arises with
    their key-share locks; SQLite runs one writer at a time anyway (the clause is not rendered there)."""
    user = await find_locked_user(tx, user_id)
    if user is None:  # deleted since the caller was resolved (app/users/lifecycle.py): the sign-in is void
        raise InvalidCredentialsError("This account no longer exists.")
    return user


async def find_user_by_email(statements: Data | Statements, email: str) -> UserRow | None:
    """``email`` in its stored form: from the ``Email`` schema type, or through ``normalize_email``."""
    return await statements.one(_USER_BY_EMAIL, email=email)


async def create_user(
    tx: Tx,
    *,
    email: str,
    hashed_password: str | None,
    full_name: str | None = None,
    auth_provider: str = AuthProvider.LOCAL,
    is_verified: bool = False,
    is_superuser: bool = False,
) -> UserRow:
    """Insert a user; a taken email is EmailTakenError (nothing else of the transaction is lost)."""
    now = utcnow()
    user = await tx.one(
        _NEW_USER,
        id=new_id(),
        email=normalize_email(email),
        hashed_password=hashed_password,
        full_name=full_name,
        is_active=True,
        is_superuser=is_superuser,
        is_verified=is_verified,
        auth_provider=auth_provider,
        supabase_id=None,
        mfa_enabled=False,
        created_at=now,
        updated_at=now,
    )
    if user is None:
        raise EmailTakenError()
    return user


async def change_user(tx: Tx, user_id: uuid.UUID, **values: Any) -> UserRow | None:
    """Set these columns of the user: one ``UPDATE ... RETURNING`` (``updated_at`` too); None when the user is
    gone. A change with a rule of its own (the email, the password) is the caller's to check first."""
    query, params = _UPDATE_USER(user_id, values)
    return await tx.one(query, **params)


async def upgrade_password_hash(tx: Tx, user_id: uuid.UUID, *, verified: str, upgraded: str) -> None:
    """Replace the hash a login just verified with its re-hash (bcrypt -> argon2), unless the password changed
    meanwhile (the new one is kept)."""
    await tx.run(_UPGRADE_HASH, user_id=user_id, verified=verified, upgraded=upgraded)


# --- Supabase identities (the verification and the merge rules live in app/auth/supabase.py) ---------

# ON CONFLICT without a target: any unique key (id, supabase_id, email) makes it a no-op, RETURNING no row.
_PROVISION = Query(
    postgresql.insert(User)
    .values(
        id=bindparam("sub"),
        supabase_id=bindparam("sub"),
        email=bindparam("set_email"),
        hashed_password=None,
        full_name=bindparam("set_full_name"),
        is_active=True,
        is_superuser=False,
        is_verified=bindparam("set_is_verified"),
        auth_provider=AuthProvider.SUPABASE,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .on_conflict_do_nothing()
    .returning(*USER_COLUMNS),
    UserRow,
)
# Only while the address is still the one the token asserts (it may have changed since the caller read it).
_MARK_VERIFIED = Query(
    update(User)
    .where(User.id == bindparam("user_id"), User.email == bindparam("address"))
    .values(is_verified=True)
    .returning(*USER_COLUMNS),
    UserRow,
)
_LINK_WHERE = (User.id == bindparam("user_id"), User.supabase_id.is_(None))
_LINK = Query(
    update(User).where(*_LINK_WHERE).values(supabase_id=bindparam("sub"), is_verified=True).returning(*USER_COLUMNS),
    UserRow,
)
_LINK_DROPPING_PASSWORD = Query(
    update(User)
    .where(*_LINK_WHERE)
    .values(supabase_id=bindparam("sub"), is_verified=True, hashed_password=None, auth_provider=AuthProvider.SUPABASE)
    .returning(*USER_COLUMNS),
    UserRow,
)


async def provision_supabase_user(
    tx: Statements, *, supabase_id: uuid.UUID, email: str, full_name: str | None, is_verified: bool
) -> UserRow | None:
    """Create the local user of a Supabase ``sub`` (id = sub), safe when many first requests race: one
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``. None when a unique key refused it: a concurrent first
    request created this user (PostgreSQL makes the insert wait for that one's commit; the caller then reads
    it), or the email belongs to another account (see the merge rules).
    """
    return await tx.one(
        _PROVISION,
        sub=supabase_id,
        set_email=email,  # normalized by the caller (or a placeholder address, app/auth/supabase.py)
        set_full_name=full_name,
        set_is_verified=is_verified,
        now=utcnow(),
    )


async def mark_verified(tx: Statements, *, user_id: uuid.UUID, email: str) -> UserRow | None:
    """The user's email counts as verified from now on, if it is still ``email``: the updated row, else None
    (the address changed, or the account is gone)."""
    return await tx.one(_MARK_VERIFIED, user_id=user_id, address=email)


async def link_supabase_identity(
    tx: Statements, *, user_id: uuid.UUID, supabase_id: uuid.UUID, drop_password: bool
) -> UserRow | None:
    """Point an existing account without a Supabase identity at ``supabase_id`` (conditional, race-safe).

    The email now counts as verified. ``drop_password`` also makes the account Supabase-only (for an account
    whose own email was never verified: whoever registered it did not prove the mailbox).
    Returns the linked row; None when the account is gone or already answers to a Supabase user (possibly this
    one, linked by a concurrent request: the caller re-reads by ``supabase_id``).
    """
    query = _LINK_DROPPING_PASSWORD if drop_password else _LINK
    return await tx.one(query, user_id=user_id, sub=supabase_id)


@dataclass(frozen=True, slots=True)
class ProfileRow:
    id: uuid.UUID
    full_name: str | None
    avatar_url: str | None
    credits: int
    created_at: datetime
    updated_at: datetime


_PROFILE_COLUMNS = (
    Profile.id,
    Profile.full_name,
    Profile.avatar_url,
    Profile.credits,
    Profile.created_at,
    Profile.updated_at,
)
_PROFILE = Query(select(*_PROFILE_COLUMNS).where(Profile.id == bindparam("user_id")), ProfileRow)
# ON CONFLICT DO NOTHING renders on SQLite as on PostgreSQL: one statement for both.
_NEW_PROFILE = Query(
    postgresql.insert(Profile)
    .values(
        id=bindparam("user_id"),
        full_name=bindparam("full_name"),
        credits=0,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(Profile.id),
    scalar,
)
_UPDATE_PROFILE = Update(Profile, returning=_PROFILE_COLUMNS, row=ProfileRow)


async def get_or_create_profile(
    tx: Statements, *, user_id: uuid.UUID, full_name: str | None, credits: int
) -> tuple[ProfileRow, bool]:
    """One profile per user, however many callers race: INSERT ... ON CONFLICT DO NOTHING.

    A new profile starts with ``credits``, granted through the ledger (its row and audit event).
    """
    created = await tx.value(_NEW_PROFILE, user_id=user_id, full_name=full_name, now=utcnow()) is not None
    if created and credits:
        await credit_service.grant_starting_credits(tx, user_id=user_id, amount=credits, reason=SIGNUP_CREDITS_REASON)
    profile = await tx.one(_PROFILE, user_id=user_id)
    assert profile is not None
    return profile, created


async def read_profile(data: Data | Statements, user_id: uuid.UUID) -> ProfileRow:
    """The caller's profile (ProfileNotFoundError until it is created)."""
    profile = await data.one(_PROFILE, user_id=user_id)
    if profile is None:
        raise ProfileNotFoundError()
    return profile


async def update_profile(tx: Tx, *, user_id: uuid.UUID, changes: ProfileUpdate) -> ProfileRow:
    values = sent_values(Profile, changes)
    if not values:
        return await read_profile(tx, user_id)
    query, params = _UPDATE_PROFILE(user_id, values)
    profile = await tx.one(query, **params)
    if profile is None:
        raise ProfileNotFoundError()
    return profile


async def update_me(tx: Tx, *, user_id: uuid.UUID, changes: UserUpdate) -> UserRow:
    """Apply the sent fields of ``UserUpdate`` (the name; the email changes through its own confirmed flow)."""
    values = sent_values(User, changes)
    user = await (change_user(tx, user_id, **values) if values else find_user(tx, user_id))
    if user is None:  # deleted since the caller was resolved (app/users/lifecycle.py)
        raise InvalidCredentialsError("This account no longer exists.")
    return user
