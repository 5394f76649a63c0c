from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.settings import Environment
from app.state import state_of

router = APIRouter(tags=["health"])

DB_CHECK_TIMEOUT = 3.0


class HealthRead(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "error"]
    version: str
    environment: Environment
    timestamp: datetime


class LiveRead(BaseModel):
    status: Literal["ok"] = "ok"


async def database_ok(engine: AsyncEngine) -> bool:
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:  # any failure means "not reachable now"; the pool recovers by itself later
        return False
    return True


@router.get(
    "/health",
    operation_id="health-check",
    response_model=HealthRead,
    responses={503: {"model": HealthRead, "description": "The database is unreachable"}},
)
async def health(request: Request) -> JSONResponse:
    """200 when the database answers, 503 ``degraded`` while it does not."""
    state = state_of(request.app)
    settings = state.settings
    ok = await database_ok(state.engine)
    body = HealthRead(
        status="ok" if ok else "degraded",
        database="ok" if ok else "error",
        version=settings.VERSION,
        environment=settings.ENVIRONMENT,
        timestamp=datetime.now(UTC),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/health/live", operation_id="health-live")
async def live() -> LiveRead:
    """200 as long as the process serves."""
    return LiveRead()
