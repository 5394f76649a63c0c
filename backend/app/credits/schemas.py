from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.core.schemas import StrictModel

MAX_AMOUNT = 1_000_000
"""The largest number of credits one spend or one admin adjustment may move."""

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
"""1..255 printable ASCII characters, not starting or ending with a space."""

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
SpendAmount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]


def _nonzero(value: int) -> int:
    if value == 0:
        raise ValueError("amount must not be zero")
    return value


AdjustAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT), AfterValidator(_nonzero)]


class CreditSpend(StrictModel):
    amount: SpendAmount
    reason: Reason


class CreditAdjust(StrictModel):
    """Body of ``POST /admin/users/{id}/credits``: a grant (positive) or a deduction (negative)."""

    amount: AdjustAmount
    reason: Reason


class CreditBalanceRead(BaseModel):
    balance: int


class CreditTransactionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    amount: int
    balance_after: int
    reason: str
    created_at: datetime
    actor_id: uuid.UUID | None


class CreditSpendRead(BaseModel):
    balance: int
    transaction: CreditTransactionRead
