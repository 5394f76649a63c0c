"""The ceiling: a bare FastAPI app answering one primary-key SELECT through a raw asyncpg pool.

Started like the real app (uvicorn, one worker, uvloop, httptools, no access log); ``CEILING_DSN`` names the
database. ``GET /users/{id}`` reads the same columns ``GET /api/v1/users/me`` answers with.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

QUERY = (
    "SELECT id, email, full_name, is_active, is_superuser, is_verified, auth_provider, created_at "
    "FROM users WHERE id = $1"
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["CEILING_DSN"], min_size=10, max_size=10)
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/users/{user_id}")
async def read_user(user_id: uuid.UUID) -> Any:
    async with app.state.pool.acquire() as connection:
        row = await connection.fetchrow(QUERY, user_id)
    if row is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    data = dict(row)
    data["id"] = str(data["id"])
    data["created_at"] = data["created_at"].isoformat()
    return data
