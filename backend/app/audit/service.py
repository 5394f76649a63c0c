"""The one writer of audit events, used by every domain, and the queries that read them."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypedDict, Unpack, cast

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Insert,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from app.audit.models import AuditEvent
from app.core.data import Data, Query, Statements, Tx, paged, scalar
from app.core.db import new_id, utcnow

# Keys whose values never enter an audit event, whatever a caller passes.
_SECRET_KEYS = {
    "password",
    "new_password",
    "current_password",
    "token",
    "refresh_token",
    "access_token",
    "hashed_password",
    "secret",
    "csrf_token",
    "key",
    "api_key",
}


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    if not details:
        return {}
    return {key: ("[redacted]" if key in _SECRET_KEYS else value) for key, value in details.items()}


_TABLE = cast(Table, AuditEvent.__table__)  # the table itself: a Core insert skips the ORM's bulk-insert layer
_INSERT = insert(_TABLE)


class EventFields(TypedDict, total=False):
    """Who and what an event names besides its action (every field optional)."""

    actor_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None  # the organization API key that acted (``actor_id`` is then its creator)
    subject_user_id: uuid.UUID | None
    org_id: uuid.UUID | None
    ip_address: str | None
    details: dict[str, Any] | None


class Acting(Protocol):
    """Who acts, as an organization's guard hands it over (``orgs.policy.Actor``): a person, or an API key
    (``user_id`` is then the key's creator)."""

    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def api_key_id(self) -> uuid.UUID | None: ...


async def record(tx: Tx, action: str, *, by: Acting | None = None, **fields: Unpack[EventFields]) -> AuditEventRow:
    """Write one event in the caller's transaction: it commits, or rolls back, with the change it describes.

    The event's ``ip_address`` is the request's (the transaction's context), unless given; ``by`` fills
    ``actor_id`` and ``actor_api_key_id``. One ``INSERT``, sent at once. Returns what was written.
    """
    if by is not None:
        fields.setdefault("actor_id", by.user_id)
        fields.setdefault("actor_api_key_id", by.api_key_id)
    fields.setdefault("ip_address", tx.context.ip_address)
    values = event_values(action, **fields)
    await tx.run(RECORD, **values)
    return AuditEventRow(**values)


def event_values(action: str, **fields: Unpack[EventFields]) -> dict[str, Any]:
    """The row of one event (also ``RECORD``'s parameters), secrets redacted."""
    return {
        "id": new_id(),
        "action": action,
        "actor_id": fields.get("actor_id"),
        "actor_api_key_id": fields.get("actor_api_key_id"),
        "subject_user_id": fields.get("subject_user_id"),
        "org_id": fields.get("org_id"),
        "ip_address": fields.get("ip_address"),
        "details": _clean(fields.get("details")),
        "created_at": utcnow(),
    }


RECORD = Query(_INSERT, lambda *_: None)
"""record() as a ``Query`` (app/core/data.py), for code that writes through ``Statements``; with event_values()."""


def insert_from(
    rows: FromClause,
    action: ColumnElement[str],
    *,
    actor_id: ColumnElement[Any],
    subject_user_id: ColumnElement[Any],
    ip_address: ColumnElement[Any],
    details: dict[str, ColumnElement[Any]],
    created_at: ColumnElement[Any],
) -> Insert:
    """``INSERT INTO audit_events ... SELECT ... FROM rows``: one event per row of ``rows``, written by the same SQL
    statement as the change it describes (PostgreSQL only).

    For a change made by one statement with data-modifying CTEs (a spend, app/credits/service.py), whose event
    must be part of that statement; everything else uses record(). The arguments are SQL expressions over
    ``rows``; ``details`` becomes a JSON object built by the database (``json_build_object``), with the same
    keys redacted as by record().
    """
    pairs: list[ColumnElement[Any]] = []
    for key, value in details.items():
        pairs += [literal(key, String), literal("[redacted]", String) if key in _SECRET_KEYS else value]
    columns = ["id", "action", "actor_id", "subject_user_id", "ip_address", "details", "created_at"]
    source = select(
        func.gen_random_uuid(),
        action,
        actor_id,
        subject_user_id,
        ip_address,
        func.json_build_object(*pairs),
        created_at,
    ).select_from(rows)
    return insert(_TABLE).from_select(columns, source)


@dataclass(frozen=True, slots=True)
class AuditEventRow:
    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    subject_user_id: uuid.UUID | None
    org_id: uuid.UUID | None
    ip_address: str | None
    details: dict[str, Any]
    created_at: datetime


_EVENT_FILTERS = {
    "actor_id": AuditEvent.actor_id,
    "user_id": AuditEvent.subject_user_id,
    "org_id": AuditEvent.org_id,
    "action": AuditEvent.action,
}
"""The filters of an event list, by parameter name (each served by its ``(column, created_at)`` index)."""


@functools.cache
def _events(filters: tuple[str, ...]) -> tuple[Query[int], Query[AuditEventRow]]:
    """Count and page of the events matching ``filters`` (names of ``_EVENT_FILTERS``, in its order), newest
    first: one pair per combination, built and compiled once; the values are parameters."""
    where = [_EVENT_FILTERS[name] == bindparam(name) for name in filters]
    rows = select(
        AuditEvent.id,
        AuditEvent.action,
        AuditEvent.actor_id,
        AuditEvent.actor_api_key_id,
        AuditEvent.subject_user_id,
        AuditEvent.org_id,
        AuditEvent.ip_address,
        AuditEvent.details,
        AuditEvent.created_at,
    )
    return (
        Query(select(func.count()).select_from(AuditEvent).where(*where), scalar),
        Query(paged(rows.where(*where).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())), AuditEventRow),
    )


async def list_org_events(data: Data, *, org_id: uuid.UUID, limit: int, offset: int) -> tuple[list[AuditEventRow], int]:
    """An organization's events, newest first, and how many there are (counted exactly, through its index)."""
    count, rows = _events(("org_id",))
    return await data.page(count, rows, org_id=org_id, limit=limit, offset=offset)


EXACT_COUNT_UP_TO = 100_000

_ESTIMATED_SIZE = Query(text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('audit_events')"), scalar)


async def _estimated_size(connection: Statements) -> int | None:
    """The planner's row estimate of the whole log, when it is so large that counting it would scan it all.

    Filtered lists are counted exactly (through their indexes); the unfiltered total of a log past
    EXACT_COUNT_UP_TO rows is PostgreSQL's estimate, so the first page costs the same at any size.
    """
    if not connection.postgresql:
        return None
    estimate = await connection.value(_ESTIMATED_SIZE)
    return int(estimate) if estimate is not None and estimate > EXACT_COUNT_UP_TO else None


async def list_events(
    data: Data,
    *,
    limit: int,
    offset: int,
    actor_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    org_id: uuid.UUID | None = None,
    action: str | None = None,
) -> tuple[list[AuditEventRow], int]:
    """The log, newest first, filtered by whichever of actor, subject user, organization and action are given."""
    values = {"actor_id": actor_id, "user_id": user_id, "org_id": org_id, "action": action}
    params = {name: value for name, value in values.items() if value is not None}
    count, rows = _events(tuple(params))
    async with data.connection() as connection:
        total = None if params else await _estimated_size(connection)
        if total is None:
            total = await connection.value(count, **params)
        items = await connection.all(rows, limit=limit, offset=offset, **params)
    return items, int(total or 0)


# --- erasure (app/users/lifecycle.py) ---------------------------------------------------------------------

ERASED = "[deleted]"
"""What replaces a deleted user's address in the events that stay."""

# Events that may name an address typed by someone else, with no user id to link them to the account: a failed
# sign-in with an address that had no account yet, an invitation to an address before it registered.
UNLINKED_ADDRESS_ACTIONS = ("auth.login_failed", "invitation.created", "invitation.revoked")

# The user's own earlier and requested addresses are in these events of theirs (details keys).
_ADDRESS_HISTORY = {"user.email_changed": ("from", "to"), "user.email_change_requested": ("email",)}

SCRUB_BATCH = 500


def _erase(value: Any, addresses: set[str]) -> Any:
    if isinstance(value, str):
        return ERASED if value.strip().lower() in addresses else value
    if isinstance(value, dict):
        return {key: _erase(item, addresses) for key, item in value.items()}
    if isinstance(value, list):
        return [_erase(item, addresses) for item in value]
    return value


_HISTORY = Query(
    select(AuditEvent.action, AuditEvent.details).where(
        AuditEvent.subject_user_id == bindparam("user_id"),
        or_(*(AuditEvent.action == action for action in _ADDRESS_HISTORY)),
    ),
    lambda action, details: (action, details),
)
_EVENT_DETAILS = select(AuditEvent.id, AuditEvent.details)
# Events linked to the user (actor or subject: their indexes) that name an address at all.
_LINKED = Query(
    _EVENT_DETAILS.where(
        or_(AuditEvent.actor_id == bindparam("user_id"), AuditEvent.subject_user_id == bindparam("user_id")),
        AuditEvent.details.cast(Text).like("%@%"),
    ),
    lambda event_id, details: (event_id, details),
)
# Events naming an address without a user id (the index on ``action``), one address at a time.
_UNLINKED = Query(
    _EVENT_DETAILS.where(
        or_(*(AuditEvent.action == action for action in UNLINKED_ADDRESS_ACTIONS)),
        AuditEvent.details["email"].as_string() == bindparam("address"),
    ),
    lambda event_id, details: (event_id, details),
)
_SCRUB = Query(update(_TABLE).where(_TABLE.c.id == bindparam("event_id")).values(details=bindparam("erased")), scalar)


async def _addresses_of(tx: Statements, user_id: uuid.UUID, current: str) -> set[str]:
    addresses = {current.lower()}
    for action, details in await tx.all(_HISTORY, user_id=user_id):
        for key in _ADDRESS_HISTORY[action]:
            value = (details or {}).get(key)
            if isinstance(value, str) and "@" in value:
                addresses.add(value.strip().lower())
    return addresses


async def erase_addresses(tx: Statements, *, user_id: uuid.UUID, email: str) -> int:
    """Remove a deleted user's addresses (the current one, and earlier or requested ones their events name)
    from the audit log, keeping the events: every value equal to one of them becomes ``[deleted]``, in the
    events linked to the user (actor or subject: their indexes) and in the few kinds of events that name an
    address without a user id (``UNLINKED_ADDRESS_ACTIONS``: the index on ``action``). Returns how many events
    changed. Ids stay (they name nobody once the account is gone); so do IP addresses (the contract keeps
    the events, without the email)."""
    addresses = await _addresses_of(tx, user_id, email)
    found = await tx.all(_LINKED, user_id=user_id)
    for address in sorted(addresses):
        found += await tx.all(_UNLINKED, address=address)
    changed: dict[uuid.UUID, dict[str, Any]] = {}
    for event_id, details in found:
        erased = _erase(details or {}, addresses)
        if erased != details:
            changed[event_id] = erased
    rows = [{"event_id": event_id, "erased": erased} for event_id, erased in changed.items()]
    for start in range(0, len(rows), SCRUB_BATCH):
        await tx.run_many(_SCRUB, rows[start : start + SCRUB_BATCH])
    return len(changed)
