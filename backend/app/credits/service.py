"""Credits: the balance on the profile and the ledger that explains it.

Every change of a balance is one conditional ``UPDATE profiles ... RETURNING credits`` (never read-modify-write)
plus exactly one ledger row, in the same transaction. A failing condition writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
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


async def _find_by_key(session: AsyncSession, *, user_id: uuid.UUID, key: str) -> CreditTransaction | None:
    return await session.scalar(
        select(CreditTransaction).where(CreditTransaction.user_id == user_id, CreditTransaction.idempotency_key == key)
    )


def _replay(transaction: CreditTransaction, fingerprint: str) -> SpendResult:
    if transaction.request_hash != fingerprint:
        raise IdempotencyKeyReusedError()
    return SpendResult(transaction=transaction, replayed=True)


async def _audit(session: AsyncSession, action: str, transaction: CreditTransaction, *, ip_address: str | None) -> None:
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


async def spend_credits(
    session: AsyncSession,
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
    """
    fingerprint = _fingerprint(amount=amount, reason=reason)
    if idempotency_key is not None:
        earlier = await _find_by_key(session, user_id=user_id, key=idempotency_key)
        if earlier is not None:
            return _replay(earlier, fingerprint)
    # With a key, a concurrent request with the same key may commit first: the ledger insert then collides on
    # uq(user_id, idempotency_key). The savepoint holds the UPDATE *and* the insert, so rolling it back also
    # returns the credits this request took.
    savepoint = session.begin_nested() if idempotency_key is not None else contextlib.nullcontext()
    try:
        async with savepoint:
            balance = await _apply(session, user_id=user_id, amount=-amount)
            if balance is None:
                raise InsufficientCreditsError()
            transaction = CreditTransaction(
                user_id=user_id,
                amount=-amount,
                balance_after=balance,
                reason=reason,
                actor_id=user_id,
                idempotency_key=idempotency_key,
                request_hash=fingerprint if idempotency_key is not None else None,
            )
            session.add(transaction)
            await session.flush()
    except (IntegrityError, InsufficientCreditsError):
        # Either the same key won the race, or it took the last credits first: answer as it did.
        if idempotency_key is None:
            raise
        earlier = await _find_by_key(session, user_id=user_id, key=idempotency_key)
        if earlier is None:
            raise
        return _replay(earlier, fingerprint)
    await _audit(session, "credits.spent", transaction, ip_address=ip_address)
    return SpendResult(transaction=transaction, replayed=False)


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
