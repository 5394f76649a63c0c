"""Credits: the balance on the profile and the ledger that explains it.

Every change of a balance (a spend, an admin grant or deduction, the starting credits of a new profile) goes
through ``_change``: one conditional ``UPDATE profiles ... RETURNING credits`` (never read-modify-write), exactly
one ledger row and its audit event, all or nothing. A failing condition writes nothing. On PostgreSQL the three
are one statement (data-modifying CTEs), so a spend needs no transaction of its own and commits in one round
trip on the app's asyncpg pool; on SQLite they are three statements in the caller's transaction. Either way the
same statements and the same audit payload (``_details``), checked by the same tests on both databases.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import Integer, Select, String, Table, Uuid, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.audit import service as audit
from app.core.data import Data, Query, Statements, paged, scalar
from app.core.db import UTCDateTime, new_id, utcnow
from app.credits.exceptions import (
    BalanceLimitError,
    CreditProfileNotFoundError,
    IdempotencyKeyReusedError,
    InsufficientCreditsError,
)
from app.credits.models import CreditTransaction
from app.users.models import Profile

MAX_BALANCE = 1_000_000_000
"""The most a profile may hold; keeps ``credits + amount`` far from the 32-bit integer limit."""

SPENT, ADJUSTED, GRANTED = "credits.spent", "credits.adjusted", "credits.granted"
"""The audit actions of a balance change: a spend, an admin adjustment, the starting credits of a profile."""


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A row of ``credit_transactions``, in table order."""

    id: uuid.UUID
    user_id: uuid.UUID
    amount: int  # signed: + grant, - spend or deduction
    balance_after: int
    reason: str
    actor_id: uuid.UUID | None
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SpendResult:
    transaction: LedgerRow
    replayed: bool  # True when an Idempotency-Key answered with the first request's transaction

    @property
    def balance(self) -> int:
        return self.transaction.balance_after


_LEDGER = cast(Table, CreditTransaction.__table__)
_KEY_CONSTRAINT = "uq_credit_transactions_user_id_idempotency_key"

_BALANCE = Query(select(Profile.credits).where(Profile.id == bindparam("user_id")), scalar)


async def get_balance(data: Statements | Data, user_id: uuid.UUID) -> int:
    """The user's balance; a user without a profile has 0 credits."""
    return int(await data.value(_BALANCE, user_id=user_id) or 0)


_LEDGER_COUNT = Query(
    select(func.count()).select_from(_LEDGER).where(_LEDGER.c.user_id == bindparam("user_id")), scalar
)
_LEDGER_PAGE = Query(
    paged(select(_LEDGER))
    .where(_LEDGER.c.user_id == bindparam("user_id"))
    .order_by(_LEDGER.c.created_at.desc(), _LEDGER.c.id.desc()),
    LedgerRow,
)


async def list_transactions(data: Data, *, user_id: uuid.UUID, limit: int, offset: int) -> tuple[list[LedgerRow], int]:
    """The user's ledger, newest first."""
    return await data.page(_LEDGER_COUNT, _LEDGER_PAGE, user_id=user_id, limit=limit, offset=offset)


# --- the one ledger ---------------------------------------------------------------------------------------
#
# A change's parameters (``_params``): user_id, amount (signed), reason, actor_id, idempotency_key and
# request_hash (None but for a keyed spend), action (the audit action), ip_address, and the new ledger row's
# transaction_id and time (now).

_USER_ID = bindparam("user_id", type_=Uuid)
_AMOUNT = bindparam("amount", type_=Integer)
_NOW = bindparam("now", type_=UTCDateTime)
_NEW_BALANCE = Profile.credits + _AMOUNT

_UPDATE = (
    update(Profile)
    .where(Profile.id == _USER_ID, _NEW_BALANCE >= 0, _NEW_BALANCE <= MAX_BALANCE)
    .values(credits=_NEW_BALANCE, updated_at=_NOW)
    .returning(Profile.credits)
)
"""The conditional UPDATE: no row back means the balance would leave 0..MAX_BALANCE (or no profile): nothing changed.
On PostgreSQL its row lock serialises changes of one balance (a waiting UPDATE re-checks its condition against
the committed row); SQLite serialises all writers."""


def _details(row: Any, as_text: Any = str) -> dict[str, Any]:
    """THE audit payload of a balance change, from its ledger row: the row's values, or (in the PostgreSQL
    statement) its columns."""
    return {
        "transaction_id": as_text(row.id),
        "amount": row.amount,  # signed, as in the ledger
        "balance_after": row.balance_after,
        "reason": row.reason,
    }


def _one_statement() -> Select[Any]:
    """PostgreSQL: ``WITH profile AS (UPDATE ... RETURNING credits), ledger AS (INSERT INTO credit_transactions
    ... SELECT ... FROM profile RETURNING *), event AS (INSERT INTO audit_events ... SELECT ... FROM ledger)
    SELECT * FROM ledger``: the ledger row is inserted only from the row the UPDATE returned and the audit event
    only from the ledger row, so a failing condition writes nothing and returns no row. If any part fails (the
    same Idempotency-Key committed first: a unique violation) the whole statement is undone, UPDATE included."""
    profile = _UPDATE.cte("profile")
    ledger_row = select(
        bindparam("transaction_id", type_=Uuid),
        _USER_ID,
        _AMOUNT,
        profile.c.credits,
        bindparam("reason", type_=String),
        bindparam("actor_id", type_=Uuid),
        bindparam("idempotency_key", type_=String),
        bindparam("request_hash", type_=String),
        _NOW,
    )
    ledger = insert(_LEDGER).from_select(list(_LEDGER.columns.keys()), ledger_row).returning(*_LEDGER.c).cte("ledger")
    event = audit.insert_from(
        ledger,
        bindparam("action", type_=String),
        actor_id=ledger.c.actor_id,
        subject_user_id=ledger.c.user_id,
        ip_address=bindparam("ip_address", type_=String),
        details=_details(ledger.c, as_text=lambda column: column),
        created_at=ledger.c.created_at,
    ).cte("event")
    return select(ledger).add_cte(event)


_CHANGE = Query(_one_statement(), LedgerRow)
_CHANGE_BALANCE = Query(_UPDATE, scalar)
_LEDGER_INSERT = Query(insert(_LEDGER), lambda *_: None)


class _KeyTaken(Exception):
    """The ledger insert collided with the same Idempotency-Key, committed first: nothing was changed."""


def _params(
    *,
    user_id: uuid.UUID,
    amount: int,
    reason: str,
    actor_id: uuid.UUID | None,
    action: str,
    ip_address: str | None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "amount": amount,
        "reason": reason,
        "actor_id": actor_id,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "action": action,
        "ip_address": ip_address,
        "transaction_id": new_id(),
        "now": utcnow(),
    }


async def _change(statements: Statements, params: dict[str, Any]) -> LedgerRow | None:
    """Apply one balance change (``_params``) with its ledger row and audit event; None when the condition failed
    (nothing written). _KeyTaken when the Idempotency-Key was committed first (nothing written either)."""
    try:
        if statements.postgresql:
            return await statements.one(_CHANGE, **params)
        balance = await statements.value(_CHANGE_BALANCE, **params)
        if balance is None:
            return None
        row = LedgerRow(
            id=params["transaction_id"],
            user_id=params["user_id"],
            amount=params["amount"],
            balance_after=balance,
            reason=params["reason"],
            actor_id=params["actor_id"],
            idempotency_key=params["idempotency_key"],
            request_hash=params["request_hash"],
            created_at=params["now"],
        )
        await statements.run(_LEDGER_INSERT, **asdict(row))
        await statements.run(
            audit.RECORD,
            **audit.event_values(
                params["action"],
                actor_id=row.actor_id,
                subject_user_id=row.user_id,
                ip_address=params["ip_address"],
                details=_details(row),
            ),
        )
        return row
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != _KEY_CONSTRAINT:
            raise
        raise _KeyTaken() from exc
    except IntegrityError as exc:
        if params["idempotency_key"] is None or "idempotency_key" not in str(exc.orig):
            raise
        raise _KeyTaken() from exc


# --- spending, adjusting, granting --------------------------------------------------------------------------

_FIND = Query(
    select(_LEDGER).where(
        _LEDGER.c.user_id == _USER_ID, _LEDGER.c.idempotency_key == bindparam("idempotency_key", type_=String)
    ),
    LedgerRow,
)


def _fingerprint(*, amount: int, reason: str) -> str:
    """What an Idempotency-Key is bound to: the same key must come back with the same request."""
    payload = json.dumps({"op": "spend", "amount": amount, "reason": reason}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _replay(transaction: LedgerRow, fingerprint: str | None) -> SpendResult:
    if transaction.request_hash != fingerprint:
        raise IdempotencyKeyReusedError()
    return SpendResult(transaction=transaction, replayed=True)


async def spend_credits(
    data: Data,
    *,
    user_id: uuid.UUID,
    amount: int,
    reason: str,
    idempotency_key: str | None = None,
    ip_address: str | None = None,
) -> SpendResult:
    """Take ``amount`` credits. InsufficientCreditsError (nothing changed) when the balance is too low or there
    is no profile. With an ``idempotency_key`` the first answer for that key is returned again, without a second
    charge, however many requests carry it at once; the key with another amount or reason is
    IdempotencyKeyReusedError.

    The spend commits on its own, before this returns, in no request transaction: on PostgreSQL one statement
    on the app's asyncpg pool; on SQLite one transaction holding the write lock from the key lookup to the commit.
    """
    fingerprint = _fingerprint(amount=amount, reason=reason) if idempotency_key is not None else None
    params = _params(
        user_id=user_id,
        amount=-amount,
        reason=reason,
        actor_id=user_id,  # the user spends
        action=SPENT,
        ip_address=ip_address,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
    )
    try:
        async with data.connection(write=True) as statements:
            if idempotency_key is not None:  # the common retry: answered from the first request's row
                earlier = await statements.one(_FIND, user_id=user_id, idempotency_key=idempotency_key)
                if earlier is not None:
                    return _replay(earlier, fingerprint)
            transaction = await _change(statements, params)
    except _KeyTaken:
        transaction = None
    if transaction is not None:
        return SpendResult(transaction=transaction, replayed=False)
    if idempotency_key is not None:
        # The same key was committed between the lookup and the change, or it took the last credits first:
        # answer as that request did.
        earlier = await data.one(_FIND, user_id=user_id, idempotency_key=idempotency_key)
        if earlier is not None:
            return _replay(earlier, fingerprint)
    raise InsufficientCreditsError()


async def adjust_credits(
    statements: Statements,
    *,
    user_id: uuid.UUID,
    amount: int,
    reason: str,
    actor_id: uuid.UUID,
    ip_address: str | None = None,
) -> LedgerRow:
    """An admin grant (``amount > 0``) or deduction (``amount < 0``), with the admin as the ledger row's actor, in
    the caller's transaction.

    Raises CreditProfileNotFoundError (404) when the user has no profile, InsufficientCreditsError (402) when a
    deduction would go below zero, BalanceLimitError (409) above MAX_BALANCE. The new balance is
    ``transaction.balance_after``.
    """
    if amount == 0:
        raise ValueError("amount must not be zero")
    params = _params(
        user_id=user_id, amount=amount, reason=reason, actor_id=actor_id, action=ADJUSTED, ip_address=ip_address
    )
    transaction = await _change(statements, params)
    if transaction is None:
        if await statements.value(_BALANCE, user_id=user_id) is None:
            raise CreditProfileNotFoundError()
        raise InsufficientCreditsError() if amount < 0 else BalanceLimitError()
    return transaction


async def grant_starting_credits(statements: Statements, *, user_id: uuid.UUID, amount: int, reason: str) -> None:
    """The starting credits of a profile just created (with 0), in the caller's transaction; the system acts."""
    params = _params(user_id=user_id, amount=amount, reason=reason, actor_id=None, action=GRANTED, ip_address=None)
    granted = await _change(statements, params)
    assert granted is not None, "a profile created in this transaction holds 0 credits"
