"""The ceilings: a bare FastAPI app running the app's SQL through a raw asyncpg pool.

Started like the real app (uvicorn, one worker, uvloop, httptools, no access log); ``CEILING_DSN`` names the
database.

- ``GET /users/{id}``: one primary-key SELECT of the columns ``GET /api/v1/users/me`` answers with (the
  ceiling of ``/users/me``, whose lookup is that one statement).
- ``GET /pages/{page}/{session_id}/{user_id}``: the statements the app runs for a page, one after the other on
  one pooled connection, outside any transaction: the caller's session joined with its user, then the page's
  own statements (``PAGES``; keep them in step with what ``app/`` sends, which PostgreSQL's statement log
  shows). The rows are answered as JSON, as the app answers them. Nothing is verified (no JWT, no rules): this
  is what the SQL alone allows.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

QUERY = (
    "SELECT id, email, full_name, is_active, is_superuser, is_verified, auth_provider, created_at "
    "FROM users WHERE id = $1"
)

CALLER = (
    "SELECT users.id, users.email, users.hashed_password, users.full_name, users.is_active, users.is_superuser, "
    "users.is_verified, users.auth_provider, users.supabase_id, users.mfa_enabled, users.created_at, "
    "users.updated_at, auth_sessions.revoked_at, auth_sessions.expires_at, auth_sessions.last_used_at, "
    "auth_sessions.aal FROM users JOIN auth_sessions ON auth_sessions.user_id = users.id "
    "WHERE auth_sessions.id = $1::UUID AND users.id = $2::UUID"
)

# page -> [(SQL, its arguments by name), ...], after the caller's lookup: "user" the caller's id, "org" the
# organization's. A count(*) gives the page's total, the other rows its items. tests/core/test_data.py checks
# that these are the statements the app sends.
PAGES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "profile": [
        (
            "SELECT profiles.id, profiles.full_name, profiles.avatar_url, profiles.credits, profiles.created_at, "
            "profiles.updated_at FROM profiles WHERE profiles.id = $1::UUID",
            ("user",),
        ),
    ],
    "members": [
        (
            "SELECT memberships.role, organizations.require_mfa FROM memberships JOIN organizations ON "
            "organizations.id = memberships.org_id "
            "WHERE memberships.org_id = $1::UUID AND memberships.user_id = $2::UUID",
            ("org", "user"),
        ),
        ("SELECT count(*) AS count_1 FROM memberships WHERE memberships.org_id = $1::UUID", ("org",)),
        (
            "SELECT memberships.org_id, memberships.user_id, users.email, users.full_name, memberships.role, "
            "memberships.created_at FROM memberships JOIN users ON users.id = memberships.user_id "
            "WHERE memberships.org_id = $1::UUID ORDER BY memberships.created_at, memberships.user_id "
            "LIMIT $2 OFFSET $3",
            ("org", "limit", "offset"),
        ),
    ],
    "orgs": [
        ("SELECT count(*) AS count_1 FROM memberships WHERE memberships.user_id = $1::UUID", ("user",)),
        (
            "SELECT organizations.id, organizations.name, organizations.slug, organizations.require_mfa, "
            "organizations.created_at, organizations.updated_at, memberships.role FROM organizations JOIN "
            "memberships ON memberships.org_id = organizations.id WHERE memberships.user_id = $1::UUID "
            "ORDER BY memberships.created_at, organizations.id LIMIT $2 OFFSET $3",
            ("user", "limit", "offset"),
        ),
    ],
    "transactions": [
        (
            "SELECT count(*) AS count_1 FROM credit_transactions WHERE credit_transactions.user_id = $1::UUID",
            ("user",),
        ),
        (
            "SELECT credit_transactions.id, credit_transactions.user_id, credit_transactions.amount, "
            "credit_transactions.balance_after, credit_transactions.reason, credit_transactions.actor_id, "
            "credit_transactions.idempotency_key, credit_transactions.request_hash, credit_transactions.created_at "
            "FROM credit_transactions WHERE credit_transactions.user_id = $1::UUID "
            "ORDER BY credit_transactions.created_at DESC, credit_transactions.id DESC LIMIT $2 OFFSET $3",
            ("user", "limit", "offset"),
        ),
    ],
}
LIMITS = {"profile": 0, "members": 50, "orgs": 20, "transactions": 50}
"""The ``limit`` of each page as the bench asks for it."""


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


def _jsonable(record: asyncpg.Record) -> dict[str, Any]:
    return {key: value if isinstance(value, str | int | bool | None) else str(value) for key, value in record.items()}


@app.get("/pages/{page}/{session_id}/{user_id}")
async def read_page(page: str, session_id: uuid.UUID, user_id: uuid.UUID, org_id: uuid.UUID | None = None) -> Response:
    values = {"user": user_id, "org": org_id, "limit": LIMITS[page], "offset": 0}
    body: dict[str, Any] = {}
    async with app.state.pool.acquire() as connection:
        if await connection.fetchrow(CALLER, session_id, user_id) is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        for sql, names in PAGES[page]:
            rows = await connection.fetch(sql, *(values[name] for name in names))
            if "count(*)" in sql:
                body["total"] = rows[0][0]
            else:
                body["items"] = [_jsonable(row) for row in rows]
    if page == "profile":
        body = body["items"][0]
    return Response(json.dumps(body), media_type="application/json")
