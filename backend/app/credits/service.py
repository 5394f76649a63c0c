"""Credits: the balance on the profile and the ledger that explains it.

Every change of a balance is one conditional ``UPDATE profiles ... RETURNING credits`` (never read-modify-write)
plus exactly one ledger row and its audit event, in the same transaction. A failing condition writes nothing.

A spend, the hot path, does not use the request's ORM session: on PostgreSQL it is one statement on the app's
asyncpg pool (see ``spend_credits`` and docs/CREDITS.md); admin adjustments stay in the request's session.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy import Integer, Select, String, Table, Uuid, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.audit import service as audit
from app.core.db import UTCDateTime, new_id, utcnow
from app.core.driver import Driver, DriverStatement
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


@dataclass(frozen=True, slots=True)
class SpendResult:
    transaction: CreditTransaction
    replayed: bool  # True when an Idempotency-Key answered with the first request's transaction

    @property
    def balance(self) -> int:
        return self.transaction.balance_after


async def get_balance(session: AsyncSession, user_id: uuid.UUID) -> int:
    """The user's balance; a user without a profile has 0 credits."""
    credits = await session.scalar(select(Profile.credits).where(Profile.id == user_id))
    return int(credits or 0)


async def list_transactions(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[CreditTransaction], int]:
    """The user's ledger, newest first."""
    total = await session.scalar(
        select(func.count()).select_from(CreditTransaction).where(CreditTransaction.user_id == user_id)
    )
    rows = await session.scalars(
        select(CreditTransaction)
        .where(CreditTransaction.user_id == user_id)
        .order_by(CreditTransaction.created_at.desc(), CreditTransaction.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


async def _apply(session: AsyncSession, *, user_id: uuid.UUID, amount: int) -> int | None:
    """Add ``amount`` (negative to take) in one conditional UPDATE; None when the result would leave 0..MAX_BALANCE.

    The row lock taken by the UPDATE serialises concurrent changes of one balance on PostgreSQL (a waiting
    UPDATE re-checks its condition against the committed row); SQLite serialises all writers.
    """
    new_balance = Profile.credits + amount
    statement = (
        update(Profile)
        .where(Profile.id == user_id, new_balance >= 0, new_balance <= MAX_BALANCE)
        .values(credits=new_balance)
        .returning(Profile.credits)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


def _fingerprint(*, amount: int, reason: str) -> str:
    """What an Idempotency-Key is bound to: the same key must come back with the same request."""
    payload = json.dumps({"op": "spend", "amount": amount, "reason": reason}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _replay(transaction: CreditTransaction, fingerprint: str | None) -> SpendResult:
    if transaction.request_hash != fingerprint:
        raise IdempotencyKeyReusedError()
    return SpendResult(transaction=transaction, replayed=True)


async def _audit(
    session: AsyncSession | AsyncConnection, action: str, transaction: CreditTransaction, *, ip_address: str | None
) -> None:
    details = {
        "transaction_id": str(transaction.id),
        "amount": transaction.amount,  # signed, as in the ledger
        "balance_after": transaction.balance_after,
        "reason": transaction.reason,
    }
    await audit.record(
        session,
        action,
        actor_id=transaction.actor_id,
        subject_user_id=transaction.user_id,
        ip_address=ip_address,
        details=details,
    )


# --- spending -------------------------------------------------------------------------------------------------
#
# The statements are built once with named parameters. A spend's parameters: user_id, amount (positive),
# reason, idempotency_key and request_hash (both None without a key), ip_address, and the new ledger row's
# transaction_id and time (now).

_LEDGER = cast(Table, CreditTransaction.__table__)
_LEDGER_COLUMNS = tuple(_LEDGER.columns.keys())
_LEDGER_INSERT = insert(_LEDGER)
_KEY_CONSTRAINT = "uq_credit_transactions_user_id_idempotency_key"

_USER_ID = bindparam("user_id", type_=Uuid)
_AMOUNT = bindparam("amount", type_=Integer)
_NOW = bindparam("now", type_=UTCDateTime)

_TAKE = (
    update(Profile)
    .where(Profile.id == _USER_ID, Profile.credits >= _AMOUNT)
    .values(credits=Profile.credits - _AMOUNT, updated_at=_NOW)
    .returning(Profile.credits)
)
"""The conditional UPDATE of a spend: no row back means too few credits (or no profile), and nothing changed."""

_FIND = select(_LEDGER).where(
    _LEDGER.c.user_id == _USER_ID, _LEDGER.c.idempotency_key == bindparam("idempotency_key", type_=String)
)


def _spend_statement() -> Select[Any]:
    """PostgreSQL: the whole spend as one statement, atomic on its own (no BEGIN/COMMIT round trips).

    ``WITH profile AS (UPDATE profiles ... RETURNING credits), ledger AS (INSERT INTO credit_transactions ...
    SELECT ... FROM profile RETURNING *), event AS (INSERT INTO audit_events ... SELECT ... FROM ledger)
    SELECT * FROM ledger``: the ledger row is inserted only from the row the UPDATE returned and the audit event
    only from the ledger row, so too few credits write nothing and return no row. If any part fails (the same
    Idempotency-Key committed first: a unique violation) the whole statement is undone, UPDATE included.
    """
    profile = _TAKE.cte("profile")
    ledger_row = select(
        bindparam("transaction_id", type_=Uuid),
        _USER_ID,
        -_AMOUNT,
        profile.c.credits,
        bindparam("reason", type_=String),
        _USER_ID,  # actor_id: the user spends
        bindparam("idempotency_key", type_=String),
        bindparam("request_hash", type_=String),
        _NOW,
    )
    ledger = insert(_LEDGER).from_select(_LEDGER_COLUMNS, ledger_row).returning(*_LEDGER.c).cte("ledger")
    event = audit.insert_from(
        ledger,
        "credits.spent",
        actor_id=ledger.c.actor_id,
        subject_user_id=ledger.c.user_id,
        ip_address=bindparam("ip_address", type_=String),
        details={  # as _audit() writes them
            "transaction_id": ledger.c.id,
            "amount": ledger.c.amount,
            "balance_after": ledger.c.balance_after,
            "reason": ledger.c.reason,
        },
        created_at=ledger.c.created_at,
    ).cte("event")
    return select(ledger).add_cte(event)


class _KeyTaken(Exception):
    """The ledger insert collided with the same Idempotency-Key, committed first: nothing was changed."""


_ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # compiles the statements below once, at import


class _PostgresLedger:
    """PostgreSQL: statements on a connection of the app's asyncpg pool, outside any transaction
    (app/core/driver.py), so each commits on its own; the spend is one statement. No SQLAlchemy execution
    layer, no ORM: through them the spend cost more CPU than the rest of its request (docs/CREDITS.md)."""

    _spend = DriverStatement(_ASYNCPG, _spend_statement())
    _find = DriverStatement(_ASYNCPG, _FIND)

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    @asynccontextmanager
    async def open(cls, driver: Driver) -> AsyncIterator[_PostgresLedger]:
        async with driver.connection() as connection:  # lost connection: 503 (Driver.connection)
            yield cls(connection)

    async def find(self, user_id: uuid.UUID, key: str) -> CreditTransaction | None:
        row = await self._connection.fetchrow(
            self._find.sql, *self._find.args({"user_id": user_id, "idempotency_key": key})
        )
        return None if row is None else CreditTransaction(**dict(row))

    async def spend(self, params: dict[str, Any]) -> CreditTransaction | None:
        try:
            row = await self._connection.fetchrow(self._spend.sql, *self._spend.args(params))
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _KEY_CONSTRAINT:
                raise
            raise _KeyTaken() from exc
        return None if row is None else CreditTransaction(**dict(row))


class _CoreLedger:
    """SQLAlchemy Core statements in one transaction: the conditional UPDATE, the ledger insert, audit.record().

    For SQLite, which has no data-modifying CTEs. ``BEGIN IMMEDIATE`` (app/core/db.py) holds the database's
    write lock from the key lookup to the commit; the savepoint and the unique key still decide a race on a
    database without one.
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @classmethod
    @asynccontextmanager
    async def open(cls, engine: AsyncEngine) -> AsyncIterator[_CoreLedger]:
        async with engine.begin() as connection:
            yield cls(connection)

    async def find(self, user_id: uuid.UUID, key: str) -> CreditTransaction | None:
        row = (await self._connection.execute(_FIND, {"user_id": user_id, "idempotency_key": key})).one_or_none()
        return None if row is None else CreditTransaction(**row._asdict())

    async def spend(self, params: dict[str, Any]) -> CreditTransaction | None:
        try:
            async with self._connection.begin_nested():
                balance = (await self._connection.execute(_TAKE, params)).scalar_one_or_none()
                if balance is None:
                    return None
                transaction = CreditTransaction(
                    id=params["transaction_id"],
                    user_id=params["user_id"],
                    amount=-params["amount"],
                    balance_after=balance,
                    reason=params["reason"],
                    actor_id=params["user_id"],
                    idempotency_key=params["idempotency_key"],
                    request_hash=params["request_hash"],
                    created_at=params["now"],
                )
                values = {name: getattr(transaction, name) for name in _LEDGER_COLUMNS}
                await self._connection.execute(_LEDGER_INSERT, values)
                await _audit(self._connection, "credits.spent", transaction, ip_address=params["ip_address"])
        except IntegrityError as exc:
            if params["idempotency_key"] is None or "idempotency_key" not in str(exc.orig):
                raise
            raise _KeyTaken() from exc
        return transaction


async def spend_credits(
    engine: AsyncEngine,
    driver: Driver | None,
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

    The spend commits on its own, before this returns, in no caller's transaction (hence an engine and the
    app's driver pool, not a session): on PostgreSQL one statement on the driver pool, elsewhere one
    transaction (_PostgresLedger, _CoreLedger).
    """
    fingerprint = _fingerprint(amount=amount, reason=reason) if idempotency_key is not None else None
    params = {
        "user_id": user_id,
        "amount": amount,
        "reason": reason,
        "idempotency_key": idempotency_key,
        "request_hash": fingerprint,
        "ip_address": ip_address,
        "transaction_id": new_id(),
        "now": utcnow(),
    }
    opened: AbstractAsyncContextManager[_PostgresLedger | _CoreLedger] = (
        _PostgresLedger.open(driver) if driver is not None else _CoreLedger.open(engine)
    )
    async with opened as ledger:
        if idempotency_key is not None:  # the common retry: answered from the first request's row
            earlier = await ledger.find(user_id, idempotency_key)
            if earlier is not None:
                return _replay(earlier, fingerprint)
        try:
            transaction = await ledger.spend(params)
        except _KeyTaken:
            transaction = None
        if transaction is not None:
            return SpendResult(transaction=transaction, replayed=False)
        if idempotency_key is not None:
            # The same key was committed between the lookup and the insert, or it took the last credits first:
            # answer as that request did.
            earlier = await ledger.find(user_id, idempotency_key)
            if earlier is not None:
                return _replay(earlier, fingerprint)
        raise InsufficientCreditsError()


async def adjust_credits(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    amount: int,
    reason: str,
    actor_id: uuid.UUID,
    ip_address: str | None = None,
) -> CreditTransaction:
    """An admin grant (``amount > 0``) or deduction (``amount < 0``), with the admin as the ledger row's actor.

    Raises CreditProfileNotFoundError (404) when the user has no profile, InsufficientCreditsError (402) when a
    deduction would go below zero, BalanceLimitError (409) above MAX_BALANCE. The new balance is
    ``transaction.balance_after``.
    """
    if amount == 0:
        raise ValueError("amount must not be zero")
    balance = await _apply(session, user_id=user_id, amount=amount)
    if balance is None:
        if await session.scalar(select(Profile.id).where(Profile.id == user_id)) is None:
            raise CreditProfileNotFoundError()
        raise InsufficientCreditsError() if amount < 0 else BalanceLimitError()
    transaction = CreditTransaction(
        user_id=user_id, amount=amount, balance_after=balance, reason=reason, actor_id=actor_id
    )
    session.add(transaction)
    await session.flush()
    await _audit(session, "credits.adjusted", transaction, ip_address=ip_address)
    return transaction
