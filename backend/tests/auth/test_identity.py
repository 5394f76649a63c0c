"""The caller's lookup (app/auth/identity.py): read outside the request's transaction, still fresh every time."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.auth import identity
from app.auth.models import AuthSession
from app.core.db import utcnow
from app.state import state_of
from app.users.models import UserRow
from tests.conftest import AppFactory, client_for, database_kind, requires_postgres
from tests.core.test_data import statements_sent
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

ME = "/api/v1/users/me"


async def last_used(app: FastAPI, session_id: Any) -> Any:
    async with state_of(app).sessionmaker() as session:
        return await session.scalar(select(AuthSession.last_used_at).where(AuthSession.id == session_id))


async def set_last_used(app: FastAPI, session_id: Any, value: Any) -> None:
    async with state_of(app).sessionmaker() as session, session.begin():
        await session.execute(update(AuthSession).where(AuthSession.id == session_id).values(last_used_at=value))


class TestLastUsed:
    async def test_recorded_on_use_at_most_once_a_minute(self, app: FastAPI) -> None:
        user = await create_user(app)
        long_ago = utcnow() - timedelta(hours=2)
        await set_last_used(app, user.session_id, long_ago)
        async with client_for(app) as client:
            assert (await client.get(ME, headers=user.headers)).status_code == 200
            touched = await last_used(app, user.session_id)
            assert touched > long_ago + timedelta(hours=1)

            recent = utcnow() - timedelta(seconds=20)  # within the minute: left as it is
            await set_last_used(app, user.session_id, recent)
            assert (await client.get(ME, headers=user.headers)).status_code == 200
            assert await last_used(app, user.session_id) == recent


class TestChangesToTheCaller:
    async def test_patch_me_is_persisted(self, app: FastAPI) -> None:
        user = await create_user(app)
        async with client_for(app) as client:
            changed = await client.patch(ME, json={"full_name": "Renamed"}, headers=user.headers)
            assert changed.status_code == 200 and changed.json()["full_name"] == "Renamed"
            assert (await client.get(ME, headers=user.headers)).json()["full_name"] == "Renamed"

    async def test_the_caller_is_a_frozen_row(self, app: FastAPI) -> None:
        # No detached ORM object whose changes would be silently dropped: writing to the caller fails at once.
        user = await create_user(app)
        assert user.session_id is not None
        found = await identity.session_user(state_of(app).data, session_id=user.session_id, user_id=user.id)
        assert found is not None
        caller, _session = found
        assert isinstance(caller, UserRow) and caller.email == user.email
        with pytest.raises(FrozenInstanceError):
            caller.full_name = "Lost"  # type: ignore[misc]


@requires_postgres()
class TestOneStatement:
    async def test_users_me_is_one_statement_outside_a_transaction(
        self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No BEGIN/COMMIT and no ORM round trips for the caller: one SELECT on the driver pool, nothing through
        the engine (docs/SCALING.md's query costs)."""
        app = await make_app()
        user = await create_user(app)
        await set_last_used(app, user.session_id, utcnow())
        async with client_for(app) as client, statements_sent(app, monkeypatch) as queries:
            response = await client.get(ME, headers=user.headers)
        assert response.status_code == 200
        assert len(queries) == 1, queries
        assert queries[0].lstrip().upper().startswith("SELECT") and "auth_sessions" in queries[0]


@pytest.fixture
def sqlite_path(app: FastAPI) -> Iterator[str]:
    if database_kind() != "sqlite":
        pytest.skip("SQLite only: the lock behaviour of the embedded database")
    yield state_of(app).settings.DATABASE_URL.split("///", 1)[1]


class TestSqliteReadsTakeNoWriteLock:
    async def test_lookup_answers_while_a_writer_holds_the_lock(self, app: FastAPI, sqlite_path: str) -> None:
        user = await create_user(app)
        writer = sqlite3.connect(sqlite_path, timeout=1, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # another process writing: readers must not queue behind it
            async with client_for(app) as client:
                response = await client.get(ME, headers=user.headers)
            assert response.status_code == 200, response.text
        finally:
            writer.execute("ROLLBACK")
            writer.close()
