"""app/core/data.py: the one way reads run, what each hot page sends, and that the bench's ceilings run the same SQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import bindparam, event, insert, select, update
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import IntegrityError

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth.identity import SESSION_USER
from app.core.context import RequestContext
from app.core.data import Query, scalar
from app.core.db import utcnow
from app.core.driver import Driver
from app.credits import service as credit_service
from app.orgs import service as org_service
from app.state import state_of
from app.users import service as user_service
from app.users.models import Profile
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


@asynccontextmanager
async def _logging_driver(monkeypatch: pytest.MonkeyPatch, log: Callable[[Any], None]) -> AsyncIterator[None]:
    """``log`` gets each statement sent on the app's asyncpg pool (asyncpg's query records) for the block."""
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
    try:
        yield
        await asyncio.sleep(0.05)  # asyncpg calls query loggers on a later turn of the loop
    finally:
        monkeypatch.setattr(Driver, "connection", opened)


@asynccontextmanager
async def driver_statements(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[tuple[str, tuple[Any, ...]]]]:
    """Each statement sent on the app's asyncpg pool (the one data path on PostgreSQL), with its arguments."""
    sent: list[tuple[str, tuple[Any, ...]]] = []
    async with _logging_driver(monkeypatch, lambda record: sent.append((record.query, tuple(record.args)))):
        yield sent


@asynccontextmanager
async def statements_sent(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every statement the app sends, on the asyncpg pool and through the engine, in the order sent."""
    queries: list[str] = []

    def log(record: Any) -> None:
        queries.append(record.query)

    def _log(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    engine = state_of(app).engine
    event.listen(engine.sync_engine, "connect", _log)
    await engine.dispose()  # new connections, each with the logger
    try:
        async with _logging_driver(monkeypatch, log):
            yield queries
    finally:
        event.remove(engine.sync_engine, "connect", _log)


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


# --- writes: Data.transaction / TxDep ------------------------------------------------------------------------

_NAME = Query(select(Profile.full_name).where(Profile.id == bindparam("user_id")), scalar)
_RENAME = Query(update(Profile).where(Profile.id == bindparam("user_id")).values(full_name=bindparam("name")), scalar)
_NEW = Query(
    insert(Profile).values(
        id=bindparam("user_id"), full_name=None, credits=0, created_at=bindparam("now"), updated_at=bindparam("now")
    ),
    scalar,
)


@pytest.mark.asyncio
async def test_a_transaction_commits_when_its_block_ends(app: FastAPI) -> None:
    user = await create_user(app)
    data = state_of(app).data
    async with data.transaction() as tx:
        await tx.run(_RENAME, user_id=user.id, name="Kept")
        assert await tx.value(_NAME, user_id=user.id) == "Kept"  # its own writes are visible inside
    assert await data.value(_NAME, user_id=user.id) == "Kept"


@pytest.mark.asyncio
async def test_a_transaction_that_raises_writes_nothing(app: FastAPI) -> None:
    user = await create_user(app, full_name="Before")
    data = state_of(app).data
    with pytest.raises(RuntimeError):
        async with data.transaction() as tx:
            await tx.run(_RENAME, user_id=user.id, name="Lost")
            raise RuntimeError("refused")
    assert await data.value(_NAME, user_id=user.id) == "Before"


@pytest.mark.asyncio
async def test_commit_keeps_what_was_written_before_it(app: FastAPI) -> None:
    user = await create_user(app, full_name="Before")
    data = state_of(app).data
    with pytest.raises(RuntimeError):
        async with data.transaction() as tx:
            await tx.run(_RENAME, user_id=user.id, name="Committed")
            await tx.commit()  # e.g. an audit event that must outlive the 401 raised next
            await tx.run(_RENAME, user_id=user.id, name="Lost")
            raise RuntimeError("refused")
    assert await data.value(_NAME, user_id=user.id) == "Committed"


@pytest.mark.asyncio
async def test_attempt_is_false_on_a_conflict_and_the_transaction_goes_on(app: FastAPI) -> None:
    user = await create_user(app, full_name="Before")  # has a profile: a second one conflicts
    data = state_of(app).data
    async with data.transaction() as tx:
        await tx.run(_RENAME, user_id=user.id, name="Kept")
        assert await tx.attempt(_NEW, user_id=user.id, now=utcnow()) is False
        assert await tx.attempt(_NEW, user_id=(other := uuid.uuid4()), now=utcnow()) is False  # no such user (FK)
        await tx.run(_RENAME, user_id=user.id, name="Kept too")
    assert await data.value(_NAME, user_id=user.id) == "Kept too"
    assert await data.value(_NAME, user_id=other) is None


@pytest.mark.asyncio
async def test_a_constraint_violation_is_an_integrity_error_on_both_databases(app: FastAPI) -> None:
    user = await create_user(app)
    with pytest.raises(IntegrityError):
        async with state_of(app).data.transaction() as tx:
            await tx.run(_NEW, user_id=user.id, now=utcnow())


@pytest.mark.asyncio
async def test_the_audit_log_takes_the_requests_address_from_its_transaction(app: FastAPI) -> None:
    context = RequestContext(ip_address="203.0.113.9", user_agent="test")
    async with state_of(app).data.transaction(context) as tx:
        event = await audit.record(tx, "test.event")
        given = await audit.record(tx, "test.event", ip_address="198.51.100.1")
    assert (event.ip_address, given.ip_address) == ("203.0.113.9", "198.51.100.1")
    rows = await state_of(app).data.all(_EVENT_IP, action="test.event")
    assert sorted(rows) == ["198.51.100.1", "203.0.113.9"]


_EVENT_IP = Query(select(AuditEvent.ip_address).where(AuditEvent.action == bindparam("action")), scalar)


@pytest.mark.asyncio
@requires_postgres()
async def test_a_write_request_sends_begin_its_statements_and_commit(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUT /profile: the caller's lookup, then one transaction on the same asyncpg pool, no ORM round trips."""
    app = await make_app()
    user = await create_user(app)
    async with client_for(app) as client:
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200  # last_used_at set
        async with statements_sent(app, monkeypatch) as queries:
            response = await client.put("/api/v1/profile", json={"full_name": "New"}, headers=user.headers)
    assert response.status_code == 200, response.text
    sent = [_flat(q) for q in queries]
    assert sent[0] == _sql(SESSION_USER)
    assert sent[1] == "BEGIN;" and sent[-1] == "COMMIT;", sent
    assert len(sent) == 4 and sent[2].startswith("UPDATE profiles SET full_name="), sent


@pytest.mark.asyncio
@requires_postgres()
async def test_a_transaction_that_sends_nothing_takes_no_connection(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    taken: list[object] = []
    opened = Driver.connection

    def counting(driver: Driver) -> Any:
        taken.append(driver)
        return opened(driver)

    monkeypatch.setattr(Driver, "connection", counting)
    async with state_of(app).data.transaction():
        pass
    assert taken == []
