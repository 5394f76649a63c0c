"""Reads straight from the database, to check what the API answered against what it stored."""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.credits.models import CreditTransaction
from app.state import state_of
from app.users.models import Profile


async def stored_balance(app: FastAPI, user_id: uuid.UUID) -> int | None:
    async with state_of(app).sessionmaker() as session:
        balance: int | None = await session.scalar(select(Profile.credits).where(Profile.id == user_id))
        return balance


async def ledger_sum(app: FastAPI, user_id: uuid.UUID) -> int:
    async with state_of(app).sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(CreditTransaction.amount), 0)).where(CreditTransaction.user_id == user_id)
        )
        return int(total or 0)


async def ledger_rows(app: FastAPI, user_id: uuid.UUID) -> list[CreditTransaction]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.scalars(select(CreditTransaction).where(CreditTransaction.user_id == user_id))
        return list(rows)


async def audit_events(app: FastAPI, action: str, user_id: uuid.UUID) -> list[AuditEvent]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == action, AuditEvent.subject_user_id == user_id)
        )
        return list(rows)
