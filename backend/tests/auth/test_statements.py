"""What the own-account writes send to PostgreSQL: one transaction of Core statements, nothing of the ORM, and
no pooled connection held through a password verification."""

from __future__ import annotations

from typing import Any

import pytest

from app.audit import service as audit
from app.auth import service as auth_service
from app.auth.identity import SESSION_USER
from app.core.data import Query
from app.users import service as user_service
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.core.test_data import _flat, _sql, statements_sent
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email

pytestmark = [pytest.mark.asyncio, requires_postgres()]

BEGIN, COMMIT = "BEGIN;", "COMMIT;"


def _transaction(*queries: Query[Any]) -> list[str]:
    return [BEGIN, *(_sql(query) for query in queries), COMMIT]


async def test_a_refresh_sends_begin_its_statements_and_commit(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session (with its user's state) and the conditional rotation, in one transaction: no caller lookup,
    no read-back, no ORM."""
    app = await make_app()
    user = await create_user(app)
    async with client_for(app) as client, statements_sent(app, monkeypatch) as queries:
        response = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert response.status_code == 200, response.text
    assert [_flat(q) for q in queries] == _transaction(auth_service._SESSION_STATE, auth_service._ROTATE)


async def test_a_login_looks_the_user_up_before_its_transaction(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup commits on its own before the password is verified; the transaction (taken after the
    verification) locks the user, starts the session, ends those over the cap and records the login."""
    app = await make_app()
    user = await create_user(app, logged_in=False)
    async with client_for(app) as client, statements_sent(app, monkeypatch) as queries:
        response = await client.post("/api/v1/auth/login", json={"email": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 200, response.text
    assert [_flat(q) for q in queries] == [
        _sql(user_service._USER_BY_EMAIL),
        *_transaction(
            user_service._LOCKED_USER,
            auth_service._NEW_SESSION,
            auth_service._END_SESSIONS_OVER_CAP,
            audit.RECORD,
        ),
    ]


@pytest.mark.parametrize("known", [True, False])
async def test_a_failed_login_commits_its_audit_event_alone(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    app = await make_app()
    email = (await create_user(app, logged_in=False)).email if known else unique_email()
    async with client_for(app) as client, statements_sent(app, monkeypatch) as queries:
        response = await client.post("/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-1"})
    assert response.status_code == 401, response.text
    assert [_flat(q) for q in queries] == [_sql(user_service._USER_BY_EMAIL), *_transaction(audit.RECORD)]


async def test_a_logout_sends_begin_its_statements_and_commit(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    user = await create_user(app)
    async with client_for(app) as client:
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200  # last_used_at set
        async with statements_sent(app, monkeypatch) as queries:
            response = await client.post("/api/v1/auth/logout", headers=user.headers)
    assert response.status_code == 204, response.text
    assert [_flat(q) for q in queries] == [
        _sql(SESSION_USER),
        *_transaction(auth_service._END_SESSION, audit.RECORD),
    ]
