from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from app.auth.dependencies import CurrentUser
from app.core.context import RequestContextDep
from app.core.data import DataDep
from app.core.schemas import Page, PageDep
from app.credits import service as credit_service
from app.credits.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    CreditBalanceRead,
    CreditSpend,
    CreditSpendRead,
    CreditTransactionRead,
)

router = APIRouter(prefix="/credits", tags=["credits"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Makes a retry safe: the same key returns the first answer and charges once "
        "(1..255 printable ASCII characters).",
    ),
]


@router.get("", operation_id="credits-balance")
async def read_balance(user: CurrentUser, data: DataDep) -> CreditBalanceRead:
    """The caller's balance (0 when no profile exists yet)."""
    return CreditBalanceRead(balance=await credit_service.get_balance(data, user.id))


@router.get("/transactions", operation_id="credits-transactions-list")
async def list_transactions(user: CurrentUser, data: DataDep, page: PageDep) -> Page[CreditTransactionRead]:
    """The caller's ledger, newest first."""
    items, total = await credit_service.list_transactions(data, user_id=user.id, limit=page.limit, offset=page.offset)
    return Page[CreditTransactionRead](
        items=[CreditTransactionRead.model_validate(item) for item in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("/spend", operation_id="credits-spend")
async def spend(
    body: CreditSpend,
    user: CurrentUser,
    data: DataDep,
    ctx: RequestContextDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CreditSpendRead:
    """Spend credits: 402 ``insufficient_credits`` changes nothing; a repeated ``Idempotency-Key`` returns the
    first answer (header ``Idempotent-Replayed: true``) without charging again; 409 ``idempotency_key_reused``
    when the key came with another amount or reason."""
    # No request session: the spend commits on its own, on PostgreSQL as one statement (docs/CREDITS.md).
    result = await credit_service.spend_credits(
        data,
        user_id=user.id,
        amount=body.amount,
        reason=body.reason,
        idempotency_key=idempotency_key,
        ip_address=ctx.ip_address,
    )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return CreditSpendRead(balance=result.balance, transaction=CreditTransactionRead.model_validate(result.transaction))
