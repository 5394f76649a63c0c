"""The service the admin endpoint builds on (adjust_credits, get_balance) and the CreditAdjust body."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.credits import service as credit_service
from app.credits.exceptions import BalanceLimitError, CreditProfileNotFoundError, InsufficientCreditsError
from app.credits.models import CreditTransaction
from app.credits.schemas import CreditAdjust
from tests.credits.helpers import audit_events, ledger_rows, ledger_sum, stored_balance
from tests.factories import create_user


async def adjust(app: FastAPI, user_id: uuid.UUID, amount: int, actor_id: uuid.UUID) -> CreditTransaction:
    async with app.state.sessionmaker() as session:
        transaction = await credit_service.adjust_credits(
            session, user_id=user_id, amount=amount, reason="support", actor_id=actor_id, ip_address="10.0.0.1"
        )
        await session.commit()
        return transaction


@pytest.mark.asyncio
class TestGetBalance:
    async def test_ok(self, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        async with app.state.sessionmaker() as session:
            assert await credit_service.get_balance(session, user.id) == 1000

    async def test_no_profile_zero(self, app: FastAPI) -> None:
        user = await create_user(app, profile=False, logged_in=False)
        async with app.state.sessionmaker() as session:
            assert await credit_service.get_balance(session, user.id) == 0


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
        assert sum(isinstance(r, CreditTransaction) for r in results) == 3
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
