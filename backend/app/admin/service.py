"""Superuser use cases: they call the other domains' services and write the ``admin.*`` audit events."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, bindparam, func, or_, select

from app.admin.schemas import AdminUserUpdate
from app.admin.search import LIKE_ESCAPE, EmailSample, like_pattern, user_matches, user_search
from app.audit import service as audit
from app.auth import service as auth_service
from app.auth.models import RevokeReason
from app.core.data import Data, Query, Tx, paged, scalar
from app.core.updates import changed_values, sent_values
from app.credits import service as credit_service
from app.orgs import service as org_service
from app.orgs.models import Membership, Organization
from app.users import lifecycle
from app.users import service as user_service
from app.users.exceptions import UserNotFoundError
from app.users.models import USER_COLUMNS, User, UserRow

# --- users --------------------------------------------------------------------------------------------


_N = len(USER_COLUMNS)
_NEWEST_FIRST = (User.created_at.desc(), User.id)


def _user_filters(is_active: bool, is_superuser: bool) -> list[ColumnElement[bool]]:
    """The filters present (the columns are NOT NULL: ``=`` is ``IS``); their values are parameters."""
    filters: list[ColumnElement[bool]] = []
    if is_active:
        filters.append(User.is_active == bindparam("is_active", type_=Boolean))
    if is_superuser:
        filters.append(User.is_superuser == bindparam("is_superuser", type_=Boolean))
    return filters


@functools.cache
def _user_list(is_active: bool, is_superuser: bool) -> tuple[Query[int], Query[UserRow]]:
    """Count and page of the users with these filters present, newest first: one pair per shape, built once."""
    where = _user_filters(is_active, is_superuser)
    return (
        Query(select(func.count()).select_from(User).where(*where), scalar),
        Query(paged(select(*USER_COLUMNS).where(*where).order_by(*_NEWEST_FIRST)), UserRow),
    )


def _found_user(*values: Any) -> tuple[UserRow, int]:
    return UserRow(*values[:_N]), values[_N]


@functools.cache
def _user_search(
    is_active: bool, is_superuser: bool, pieces: int, exact_is_key: bool
) -> tuple[Query[int], Query[tuple[UserRow, int]]]:
    """Count and page (each user with the search's total) of a search of this shape (``search.user_matches``).

    A search walks the trigram indexes once: the page and its exact total (count(*) OVER () of the same matches)
    come from one statement, the page's users joined back by primary key. Past the last page there is no row to
    carry the total, so it is counted apart. Without a search, count + page stay: there PostgreSQL counts in
    parallel and keeps only the top rows of its sort, where a window count sorts every row (about three times
    slower on a million users, docs/SCALING.md). A search matching nearly every row pays that too.
    """
    where = [*_user_filters(is_active, is_superuser), user_matches(pieces, exact_is_key)]
    page = paged(
        select(User.id, User.created_at, func.count().over().label("total")).where(*where).order_by(*_NEWEST_FIRST)
    ).subquery("page")
    rows = (
        select(*USER_COLUMNS, page.c.total)
        .join_from(User, page, User.id == page.c.id)
        .order_by(page.c.created_at.desc(), page.c.id)
    )
    return Query(select(func.count()).select_from(User).where(*where), scalar), Query(rows, _found_user)


async def list_users(
    data: Data,
    *,
    limit: int,
    offset: int,
    search: str | None = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
    sample: EmailSample | None = None,
) -> tuple[list[UserRow], int]:
    """A page of users, newest first, and their total. ``sample`` tells a search which pieces of its text are
    worth an index look-up (``app/admin/search.py``). Each shape of statement (filters present, the search's
    pieces) is built and compiled once; the values are its parameters."""
    params: dict[str, Any] = {
        name: value for name, value in (("is_active", is_active), ("is_superuser", is_superuser)) if value is not None
    }
    filters = (is_active is not None, is_superuser is not None)
    if not (search and search.strip()):
        count, rows = _user_list(*filters)
        return await data.page(count, rows, limit=limit, offset=offset, **params)
    found = user_search(search.strip(), await sample.emails(data) if sample else ())
    count, matches = _user_search(*filters, *found.shape)
    params.update(found.params())
    async with data.connection() as connection:
        page = await connection.all(matches, limit=limit, offset=offset, **params)
        if page:
            return [user for user, _ in page], int(page[0][1])
        total = await connection.value(count, **params) if offset else 0
    return [], int(total or 0)


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: UserRow
    organizations: list[org_service.UserMembership]
    balance: int


async def get_user_detail(data: Data, user_id: uuid.UUID) -> UserDetail:
    async with data.connection() as connection:
        user = await user_service.get_user(connection, user_id)
        memberships = await org_service.list_user_memberships(connection, user_id)
        balance = await credit_service.get_balance(connection, user_id)
    return UserDetail(user=user, organizations=memberships, balance=balance)


async def update_user(tx: Tx, *, actor: UserRow, user_id: uuid.UUID, changes: AdminUserUpdate) -> UserRow:
    """Apply ``is_active`` / ``is_superuser`` / ``full_name``; deactivation ends every session at once."""
    if changes.is_superuser is False or changes.is_active is False:
        await user_service.ensure_another_superuser(tx, losing=user_id)
    # The user's row first, then the sessions: a login's lock order (no deadlock).
    current = await user_service.find_locked_user(tx, user_id)
    if current is None:
        raise UserNotFoundError()
    applied = changed_values(current, sent_values(User, changes))
    if not applied:
        return current
    user = await user_service.change_user(tx, user_id, **applied)
    assert user is not None  # locked above
    details: dict[str, Any] = {"changes": applied}
    if current.is_active and not user.is_active:
        ended = await auth_service.revoke_user_sessions(tx, user_id=user_id, reason=RevokeReason.USER_DEACTIVATED)
        details["sessions_ended"] = len(ended)
    await audit.record(tx, "admin.user_updated", actor_id=actor.id, subject_user_id=user_id, details=details)
    return user


async def delete_user(tx: Tx, *, actor: UserRow, user_id: uuid.UUID, force: bool) -> lifecycle.Deletion:
    """The self-service deletion's implementation (app/users/lifecycle.py), by an admin: the same rules, except
    that every organization the user owns alone (with or without other members) answers 409 ``sole_owner``
    unless ``force`` deletes it: an admin's delete never takes an organization silently (API.md)."""
    return await lifecycle.delete_account(tx, user_id=user_id, actor_id=actor.id, force=force, refuse_alone=True)


async def list_user_sessions(data: Data, user_id: uuid.UUID) -> list[auth_service.SessionRow]:
    async with data.connection() as connection:
        await user_service.get_user(connection, user_id)
        return await auth_service.all_sessions(connection, user_id=user_id)


async def revoke_user_sessions(tx: Tx, *, actor: UserRow, user_id: uuid.UUID) -> int:
    await user_service.get_user(tx, user_id)
    ended = await auth_service.revoke_user_sessions(tx, user_id=user_id, reason=RevokeReason.ADMIN)
    await audit.record(
        tx, "admin.sessions_revoked", actor_id=actor.id, subject_user_id=user_id, details={"sessions_ended": len(ended)}
    )
    return len(ended)


async def adjust_credits(
    tx: Tx, *, actor: UserRow, user_id: uuid.UUID, amount: int, reason: str
) -> credit_service.LedgerRow:
    """Add (or, with a negative amount, take) credits; never below zero. The ledger names the admin."""
    await user_service.get_user(tx, user_id)
    return await credit_service.adjust_credits(
        tx, user_id=user_id, amount=amount, reason=reason, actor_id=actor.id, ip_address=tx.context.ip_address
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


async def delete_org(tx: Tx, *, actor: UserRow, org_id: uuid.UUID) -> None:
    org = await org_service.delete_org(tx, org_id, actor.id)  # raises org_not_found
    await audit.record(
        tx, "admin.org_deleted", actor_id=actor.id, org_id=org_id, details={"name": org.name, "slug": org.slug}
    )
