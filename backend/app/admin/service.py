"""Superuser use cases: they call the other domains' services and write the ``admin.*`` audit events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.schemas import AdminUserUpdate
from app.admin.search import LIKE_ESCAPE, EmailSample, like_pattern, user_search
from app.audit import service as audit
from app.auth import service as auth_service
from app.auth.models import RevokeReason
from app.core.data import Data, Query, in_session, paged, scalar
from app.core.updates import apply_changes
from app.credits import service as credit_service
from app.orgs import service as org_service
from app.orgs.models import Membership, Organization
from app.users import lifecycle
from app.users import service as user_service
from app.users.models import User, UserRow


async def _fresh_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    """The user as the database has it now (the identity map may hold an older copy), or UserNotFoundError."""
    user = await session.get(User, user_id, populate_existing=True)
    if user is None:
        return await user_service.get_user(session, user_id)  # raises user_not_found
    return user


# --- users --------------------------------------------------------------------------------------------


async def list_users(
    session: AsyncSession,
    *,
    limit: int,
    offset: int,
    search: str | None = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
    sample: EmailSample | None = None,
) -> tuple[list[User], int]:
    """A page of users, newest first, and their total. ``sample`` tells a search which pieces of its text are
    worth an index look-up (``app/admin/search.py``)."""
    conditions: list[ColumnElement[bool]] = []
    if is_active is not None:
        conditions.append(User.is_active.is_(is_active))
    if is_superuser is not None:
        conditions.append(User.is_superuser.is_(is_superuser))
    newest_first = (User.created_at.desc(), User.id)
    if not (search and search.strip()):
        total = await session.scalar(select(func.count()).select_from(User).where(*conditions))
        query = select(User).where(*conditions).order_by(*newest_first).limit(limit).offset(offset)
        return list(await session.scalars(query)), int(total or 0)
    # A search walks the trigram indexes once: the page and its exact total (count(*) OVER () of the same
    # matches) come from one statement, the page's users joined back by primary key. Past the last page
    # there is no row to carry the total, so it is counted apart. Without a search, count + page stay: there
    # PostgreSQL counts in parallel and keeps only the top rows of its sort, where a window count sorts every
    # row (1,000,000 users: 0.5 s -> 1.4 s). A search matching nearly every row pays that too (docs/SCALING.md).
    conditions.append(user_search(search.strip(), await sample.emails(session) if sample else ()))
    page = (
        select(User.id, User.created_at, func.count().over().label("total"))
        .where(*conditions)
        .order_by(*newest_first)
        .limit(limit)
        .offset(offset)
        .subquery("page")
    )
    found = (
        await session.execute(
            select(User, page.c.total).join(page, User.id == page.c.id).order_by(page.c.created_at.desc(), page.c.id)
        )
    ).all()
    if found:
        return [user for user, _ in found], int(found[0].total)
    total = await session.scalar(select(func.count()).select_from(User).where(*conditions)) if offset else 0
    return [], int(total or 0)


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: User
    organizations: list[org_service.UserMembership]
    balance: int


async def get_user_detail(session: AsyncSession, user_id: uuid.UUID) -> UserDetail:
    user = await user_service.get_user(session, user_id)
    memberships = await org_service.list_user_memberships(session, user_id)
    balance = await credit_service.get_balance(in_session(session), user_id)
    return UserDetail(user=user, organizations=memberships, balance=balance)


async def update_user(
    session: AsyncSession,
    *,
    actor: UserRow,
    user_id: uuid.UUID,
    changes: AdminUserUpdate,
    ip_address: str | None,
) -> User:
    """Apply ``is_active`` / ``is_superuser`` / ``full_name``; deactivation ends every session at once."""
    if changes.is_superuser is False or changes.is_active is False:
        await user_service.ensure_another_superuser(session, losing=user_id)
    user = await _fresh_user(session, user_id)
    was_active = user.is_active
    applied = apply_changes(user, changes)
    details: dict[str, Any] = {"changes": applied}
    if was_active and not user.is_active:
        ended = await auth_service.revoke_user_sessions(session, user_id=user.id, reason=RevokeReason.USER_DEACTIVATED)
        details["sessions_ended"] = len(ended)
    await session.flush()
    if applied:
        await audit.record(
            session,
            "admin.user_updated",
            actor_id=actor.id,
            subject_user_id=user.id,
            ip_address=ip_address,
            details=details,
        )
    return user


async def delete_user(
    session: AsyncSession, *, actor: UserRow, user_id: uuid.UUID, force: bool, ip_address: str | None
) -> lifecycle.Deletion:
    """The self-service deletion's implementation (app/users/lifecycle.py), by an admin: the same rules, except
    that every organization the user owns alone (with or without other members) answers 409 ``sole_owner``
    unless ``force`` deletes it: an admin's delete never takes an organization silently (API.md)."""
    return await lifecycle.delete_account(
        session, user_id=user_id, actor_id=actor.id, force=force, refuse_alone=True, ip_address=ip_address
    )


async def list_user_sessions(session: AsyncSession, user_id: uuid.UUID) -> list[auth_service.SessionRow]:
    await user_service.get_user(session, user_id)
    return await auth_service.all_sessions(in_session(session), user_id=user_id)


async def revoke_user_sessions(
    session: AsyncSession, *, actor: UserRow, user_id: uuid.UUID, ip_address: str | None
) -> int:
    await user_service.get_user(session, user_id)
    ended = await auth_service.revoke_user_sessions(session, user_id=user_id, reason=RevokeReason.ADMIN)
    await audit.record(
        session,
        "admin.sessions_revoked",
        actor_id=actor.id,
        subject_user_id=user_id,
        ip_address=ip_address,
        details={"sessions_ended": len(ended)},
    )
    return len(ended)


async def adjust_credits(
    session: AsyncSession, *, actor: UserRow, user_id: uuid.UUID, amount: int, reason: str, ip_address: str | None
) -> credit_service.LedgerRow:
    """Add (or, with a negative amount, take) credits; never below zero. The ledger names the admin."""
    await user_service.get_user(session, user_id)
    return await credit_service.adjust_credits(
        in_session(session), user_id=user_id, amount=amount, reason=reason, actor_id=actor.id, ip_address=ip_address
    )


# --- organizations ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrgListRow:
    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    member_count: int


_MEMBER_COUNT = (
    select(func.count()).where(Membership.org_id == Organization.id).correlate(Organization).scalar_subquery()
)
_ORG_MATCHES = or_(
    Organization.name.ilike(bindparam("pattern"), escape=LIKE_ESCAPE),
    Organization.slug.ilike(bindparam("pattern"), escape=LIKE_ESCAPE),
)
_ORG_ROWS = select(
    Organization.id, Organization.name, Organization.slug, Organization.created_at, _MEMBER_COUNT.label("member_count")
).order_by(Organization.created_at.desc(), Organization.id)
_ORGS_COUNT = Query(select(func.count()).select_from(Organization), scalar)
_ORGS = Query(paged(_ORG_ROWS), OrgListRow)
_FOUND_ORGS_COUNT = Query(select(func.count()).select_from(Organization).where(_ORG_MATCHES), scalar)
_FOUND_ORGS = Query(paged(_ORG_ROWS.where(_ORG_MATCHES)), OrgListRow)


async def list_orgs(data: Data, *, limit: int, offset: int, search: str | None = None) -> tuple[list[OrgListRow], int]:
    """A page of organizations, newest first, with their member counts; ``search`` matches the name or slug."""
    if search and search.strip():
        pattern = like_pattern(search.strip())
        return await data.page(_FOUND_ORGS_COUNT, _FOUND_ORGS, limit=limit, offset=offset, pattern=pattern)
    return await data.page(_ORGS_COUNT, _ORGS, limit=limit, offset=offset)


async def delete_org(session: AsyncSession, *, actor: UserRow, org_id: uuid.UUID, ip_address: str | None) -> None:
    org = await org_service.get_org(session, org_id)  # raises org_not_found
    name, slug = org.name, org.slug
    await org_service.delete_org(session, org_id, actor.id, ip_address=ip_address)
    await audit.record(
        session,
        "admin.org_deleted",
        actor_id=actor.id,
        org_id=org_id,
        ip_address=ip_address,
        details={"name": name, "slug": slug},
    )
