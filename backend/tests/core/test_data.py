"""app/core/data.py: the one way reads run, what each hot page sends, and that the bench's ceilings run the same SQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from app.auth.identity import SESSION_USER
from app.core.data import Query, in_session
from app.core.driver import Driver
from app.credits import service as credit_service
from app.orgs import service as org_service
from app.state import state_of
from app.users import service as user_service
from bench import ceiling_app
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.factories import create_user
from tests.orgs.helpers import make_org

PAGE_QUERIES: dict[str, list[Query[Any]]] = {
    "profile": [user_service._PROFILE],
    "members": [org_service._ACCESS, org_service._MEMBERS_COUNT, org_service._MEMBERS],
    "orgs": [org_service._MY_ORGS_COUNT, org_service._MY_ORGS],
    "transactions": [credit_service._LEDGER_COUNT, credit_service._LEDGER_PAGE],
}


def _flat(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def _sql(query: Query[Any]) -> str:
    return _flat(query.compiled(PGDialect_asyncpg()).sql)  # type: ignore[no-untyped-call]


def test_the_ceilings_run_the_apps_sql() -> None:
    # bench/ceiling_app.py measures what the app's SQL allows: a change here must reach the ceiling too.
    assert _flat(ceiling_app.CALLER) == _sql(SESSION_USER)
    assert set(ceiling_app.PAGES) == set(PAGE_QUERIES)
    for page, queries in PAGE_QUERIES.items():
        assert [_flat(sql) for sql, _names in ceiling_app.PAGES[page]] == [_sql(q) for q in queries], page


@pytest.mark.asyncio
async def test_a_query_runs_inside_a_session_too(app: FastAPI) -> None:
    user = await create_user(app)
    async with state_of(app).sessionmaker() as session:
        outside = await state_of(app).data.one(user_service._PROFILE, user_id=user.id)
        inside = await in_session(session).one(user_service._PROFILE, user_id=user.id)
    assert outside is not None and outside == inside


@asynccontextmanager
async def statements_sent(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every statement the app sends, on the asyncpg pool and through the engine."""
    queries: list[str] = []

    def log(record: Any) -> None:
        queries.append(record.query)

    @event.listens_for(state_of(app).engine.sync_engine, "connect")
    def _log(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    await state_of(app).engine.dispose()  # new connections, each with the logger
    opened = Driver.connection

    @asynccontextmanager
    async def logged(driver: Driver) -> AsyncIterator[Any]:
        async with opened(driver) as connection:
            connection.add_query_logger(log)
            try:
                yield connection
            finally:
                connection.remove_query_logger(log)

    monkeypatch.setattr(Driver, "connection", logged)
    yield queries
    await asyncio.sleep(0.05)  # asyncpg calls query loggers on a later turn of the loop


@pytest.mark.asyncio
@requires_postgres()
@pytest.mark.parametrize("page", sorted(PAGE_QUERIES))
async def test_a_page_sends_its_statements_and_nothing_else(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """The caller's lookup, then the page's own statements: no BEGIN/COMMIT, no ORM round trips."""
    app = await make_app()
    user = await create_user(app)
    org_id = await make_org(app, user)
    paths = {
        "profile": "/api/v1/profile",
        "members": f"/api/v1/organizations/{org_id}/members?limit=50",
        "orgs": "/api/v1/organizations",
        "transactions": "/api/v1/credits/transactions?limit=50",
    }
    async with client_for(app) as client:
        assert (await client.get(paths[page], headers=user.headers)).status_code == 200  # last_used_at set
        async with statements_sent(app, monkeypatch) as queries:
            response = await client.get(paths[page], headers=user.headers)
    assert response.status_code == 200, response.text
    assert [_flat(q) for q in queries] == [_sql(SESSION_USER)] + [_sql(q) for q in PAGE_QUERIES[page]]


@pytest.mark.asyncio
async def test_a_page_past_its_rows_still_counts(app: FastAPI) -> None:
    user = await create_user(app)
    async with client_for(app) as client:
        response = await client.get("/api/v1/credits/transactions?offset=5", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["items"] == [] and response.json()["total"] == 1  # the signup credits


@pytest.mark.asyncio
async def test_unknown_rows_are_none(app: FastAPI) -> None:
    assert await state_of(app).data.one(user_service._PROFILE, user_id=uuid.uuid4()) is None
