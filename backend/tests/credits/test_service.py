"""The services: spend_credits' two ways of executing (one statement on PostgreSQL, Core on SQLite) with races
made deterministic, adjust_credits and get_balance that the admin endpoints build on, and the CreditAdjust body."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import insert, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credits import service as credit_service
from app.credits.exceptions import (
    BalanceLimitError,
    CreditProfileNotFoundError,
    IdempotencyKeyReusedError,
    InsufficientCreditsError,
)
from app.credits.models import CreditTransaction
from app.credits.schemas import CreditAdjust
from app.state import state_of
from app.users.models import Profile
from tests.conftest import DB_KIND
from tests.credits.helpers import audit_events, ledger_rows, ledger_sum, stored_balance
from tests.factories import create_user


async def adjust(app: FastAPI, user_id: uuid.UUID, amount: int, actor_id: uuid.UUID) -> credit_service.LedgerRow:
    async with state_of(app).data.transaction() as tx:
        transaction = await credit_service.adjust_credits(
            tx,
            user_id=user_id,
            amount=amount,
            reason="support",
            actor_id=actor_id,
            ip_address="10.0.0.1",
        )
    return transaction


async def spend(app: FastAPI, user_id: uuid.UUID, amount: int, key: str | None = None) -> credit_service.SpendResult:
    return await credit_service.spend_credits(
        state_of(app).data,
        user_id=user_id,
        amount=amount,
        reason="export",
        idempotency_key=key,
        ip_address="10.0.0.2",
    )


async def _first_spend_uncommitted(engine: AsyncEngine, user_id: uuid.UUID, amount: int, key: str) -> Any:
    """Another request's spend with ``key``, written but not committed: it holds the profile's row lock on
    PostgreSQL, the database's write lock on SQLite. Returns its (connection, transaction, ledger row id)."""
    connection = await engine.connect()
    transaction = await connection.begin()
    await connection.execute(update(Profile).where(Profile.id == user_id).values(credits=Profile.credits - amount))
    row_id = uuid.uuid4()
    await connection.execute(
        insert(CreditTransaction).values(
            id=row_id,
            user_id=user_id,
            amount=-amount,
            balance_after=1000 - amount,
            reason="export",
            actor_id=user_id,
            idempotency_key=key,
            request_hash=credit_service._fingerprint(amount=amount, reason="export"),
        )
    )
    return connection, transaction, row_id


_REFUSE_AUDIT = {
    "postgres": [
        "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()",
    ],
    "sqlite": [
        "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    ],
}
_ALLOW_AUDIT = {
    "postgres": ["DROP TRIGGER test_refuse_audit ON audit_events", "DROP FUNCTION test_refuse_audit()"],
    "sqlite": ["DROP TRIGGER test_refuse_audit"],
}


@pytest.mark.asyncio
class TestSpendCredits:
    """The same cases on both databases: PostgreSQL runs the spend as one statement, SQLite as Core statements."""

    async def test_ok(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        result = await spend(app, user.id, 30)
        assert not result.replayed and result.balance == 970
        transaction = result.transaction
        assert (transaction.amount, transaction.balance_after, transaction.reason) == (-30, 970, "export")
        assert transaction.user_id == transaction.actor_id == user.id
        assert transaction.idempotency_key is None and transaction.request_hash is None
        assert [row.id for row in await ledger_rows(app, user.id) if row.amount < 0] == [transaction.id]
        assert await stored_balance(app, user.id) == 970 == await ledger_sum(app, user.id)

    async def test_audited(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        transaction = (await spend(app, user.id, 30)).transaction
        (event,) = await audit_events(app, "credits.spent", user.id)
        assert (event.actor_id, event.subject_user_id, event.org_id) == (user.id, user.id, None)
        assert event.ip_address == "10.0.0.2"
        assert event.details == {
            "transaction_id": str(transaction.id),
            "amount": -30,
            "balance_after": 970,
            "reason": "export",
        }

    async def test_insufficient_changes_nothing(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        with pytest.raises(InsufficientCreditsError):
            await spend(app, user.id, 1001, key="k1")
        assert await stored_balance(app, user.id) == 1000
        assert len(await ledger_rows(app, user.id)) == 1
        assert await audit_events(app, "credits.spent", user.id) == []

    async def test_no_profile_insufficient(self, app: FastAPI) -> None:
        user = await create_user(app, profile=False, logged_in=False)
        with pytest.raises(InsufficientCreditsError):
            await spend(app, user.id, 1)
        assert await ledger_rows(app, user.id) == []

    async def test_replay_and_reuse(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        first = await spend(app, user.id, 30, key="k1")
        again = await spend(app, user.id, 30, key="k1")
        assert again.replayed and again.transaction.id == first.transaction.id and again.balance == 970
        with pytest.raises(IdempotencyKeyReusedError):
            await spend(app, user.id, 31, key="k1")
        assert await stored_balance(app, user.id) == 970
        assert len(await audit_events(app, "credits.spent", user.id)) == 1

    async def test_failure_writes_nothing(self, app: FastAPI) -> None:
        """Any part failing (here the audit insert) undoes the whole spend: no half-written rows."""
        user = await create_user(app, logged_in=False)
        async with state_of(app).engine.begin() as connection:
            for statement in _REFUSE_AUDIT[DB_KIND]:
                await connection.execute(text(statement))
        try:
            with pytest.raises((DBAPIError, asyncpg.PostgresError)):
                await spend(app, user.id, 30)
        finally:
            async with state_of(app).engine.begin() as connection:
                for statement in _ALLOW_AUDIT[DB_KIND]:
                    await connection.execute(text(statement))
        assert await stored_balance(app, user.id) == 1000
        assert len(await ledger_rows(app, user.id)) == 1

    @pytest.mark.parametrize("amount", [30, 1000], ids=["credits-left", "last-credits"])
    async def test_same_key_committed_meanwhile(self, app: FastAPI, amount: int) -> None:
        """A spend whose key another request commits while it waits answers with that request's transaction.

        PostgreSQL: the lookup misses the uncommitted row, the statement waits for the profile's row lock, then
        collides on the key (credits-left: the statement is undone, UPDATE included) or finds too few credits
        (last-credits); either way the row is looked up again. SQLite: the spend waits for the write lock and
        its lookup finds the row.
        """
        user = await create_user(app, logged_in=False)
        connection, transaction, first_id = await _first_spend_uncommitted(state_of(app).engine, user.id, amount, "k")
        try:
            task = asyncio.create_task(spend(app, user.id, amount, key="k"))
            await asyncio.sleep(0.3)
            assert not task.done(), "the spend should wait for the first request's lock"
            await transaction.commit()
        finally:
            await connection.close()
        result = await task
        assert result.replayed and result.transaction.id == first_id and result.balance == 1000 - amount
        assert await stored_balance(app, user.id) == 1000 - amount == await ledger_sum(app, user.id)
        assert len(await ledger_rows(app, user.id)) == 2
        assert await audit_events(app, "credits.spent", user.id) == []  # the first request was not the service


@pytest.mark.asyncio
class TestGetBalance:
    async def test_ok(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        assert await credit_service.get_balance(state_of(app).data, user.id) == 1000

    async def test_no_profile_zero(self, app: FastAPI) -> None:
        user = await create_user(app, profile=False, logged_in=False)
        assert await credit_service.get_balance(state_of(app).data, user.id) == 0


@pytest.mark.asyncio
class TestAdjustCredits:
    async def test_grant(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        transaction = await adjust(app, user.id, 500, admin.id)
        assert transaction.amount == 500 and transaction.balance_after == 1500
        assert transaction.actor_id == admin.id and transaction.reason == "support"
        assert await stored_balance(app, user.id) == 1500
        assert await ledger_sum(app, user.id) == 1500

    async def test_deduction(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        transaction = await adjust(app, user.id, -1000, admin.id)
        assert transaction.balance_after == 0
        assert await ledger_sum(app, user.id) == 0

    async def test_audited(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        transaction = await adjust(app, user.id, -5, admin.id)
        (event,) = await audit_events(app, "credits.adjusted", user.id)
        assert event.actor_id == admin.id and event.ip_address == "10.0.0.1"
        assert event.details == {
            "transaction_id": str(transaction.id),
            "amount": -5,
            "balance_after": 995,
            "reason": "support",
        }

    async def test_below_zero_402_changes_nothing(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        with pytest.raises(InsufficientCreditsError):
            await adjust(app, user.id, -1001, admin.id)
        assert await stored_balance(app, user.id) == 1000
        assert len(await ledger_rows(app, user.id)) == 1

    async def test_above_limit_409(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        with pytest.raises(BalanceLimitError):
            await adjust(app, user.id, credit_service.MAX_BALANCE, admin.id)
        assert await stored_balance(app, user.id) == 1000

    async def test_no_profile_404(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app, profile=False)
        with pytest.raises(CreditProfileNotFoundError):
            await adjust(app, user.id, 100, admin.id)
        assert await ledger_rows(app, user.id) == []

    async def test_zero_refused(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        with pytest.raises(ValueError, match="zero"):
            await adjust(app, user.id, 0, admin.id)

    async def test_concurrent_deductions_never_below_zero(self, app: FastAPI) -> None:
        admin, user = await create_user(app, is_superuser=True), await create_user(app)
        results = await asyncio.gather(
            *(adjust(app, user.id, -300, admin.id) for _ in range(5)), return_exceptions=True
        )
        assert sum(isinstance(r, credit_service.LedgerRow) for r in results) == 3
        assert sum(isinstance(r, InsufficientCreditsError) for r in results) == 2
        assert await stored_balance(app, user.id) == 100
        assert await ledger_sum(app, user.id) == 100


class TestCreditAdjustSchema:
    @pytest.mark.parametrize("amount", [1, -1, 1_000_000, -1_000_000])
    def test_ok(self, amount: int) -> None:
        assert CreditAdjust.model_validate({"amount": amount, "reason": " bonus "}).reason == "bonus"

    @pytest.mark.parametrize(
        "body",
        [
            {"amount": 0, "reason": "x"},
            {"amount": 1_000_001, "reason": "x"},
            {"amount": -1_000_001, "reason": "x"},
            {"amount": 1.5, "reason": "x"},
            {"amount": "5", "reason": "x"},
            {"amount": 5, "reason": ""},
            {"amount": 5, "reason": "x" * 256},
            {"amount": 5, "reason": "x", "actor_id": "someone"},
        ],
        ids=["zero", "over-max", "under-min", "float", "string", "empty-reason", "long-reason", "extra-field"],
    )
    def test_invalid(self, body: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            CreditAdjust.model_validate_json(json.dumps(body))
