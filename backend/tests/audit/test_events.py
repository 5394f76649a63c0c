"""The audit log: what auth, admin and the other domains write, and that no secret ever enters it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import String, Uuid, literal, select

from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.core.db import UTCDateTime, utcnow
from app.state import state_of
from app.users.models import User
from tests.conftest import requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email

pytestmark = pytest.mark.asyncio

AUTH = "/api/v1/auth"
WRONG_PASSWORD = "Wrong-Password-But-Long-31"
NEW_PASSWORD = "Brand-New-Password-Here-58"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def all_events(app: FastAPI) -> list[AuditEvent]:
    async with state_of(app).sessionmaker() as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.created_at)))


async def actions_for(app: FastAPI, user_id: Any) -> list[str]:
    return [event.action for event in await all_events(app) if event.subject_user_id == user_id]


async def login(client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    response = await client.post(f"{AUTH}/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestAuthEvents:
    async def test_login_success(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        tokens = await login(client, user.email)
        [event] = [e for e in await all_events(app) if e.action == "auth.login"]
        assert (event.actor_id, event.subject_user_id, event.ip_address) == (user.id, user.id, "127.0.0.1")
        assert event.details["session_id"] == tokens["session_id"]

    async def test_login_failure_without_password(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        unknown = unique_email("ghost")
        for email in (user.email, unknown):
            response = await client.post(f"{AUTH}/login", json={"email": email, "password": WRONG_PASSWORD})
            assert response.status_code == 401
        failures = [e for e in await all_events(app) if e.action == "auth.login_failed"]
        assert {e.details["email"] for e in failures} == {user.email, unknown}
        assert [e.subject_user_id for e in failures if e.details["email"] == user.email] == [user.id]
        assert WRONG_PASSWORD not in json.dumps([e.details for e in failures])

    async def test_refresh_token_reuse(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        tokens = await login(client, user.email)
        first = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
        second = await client.post(f"{AUTH}/refresh", json={"refresh_token": first.json()["refresh_token"]})
        assert second.status_code == 200
        reused = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert reused.status_code == 401
        assert "auth.refresh_token_reused" in await actions_for(app, user.id)

    async def test_logout_and_revocations(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        one = await login(client, user.email)
        two = await login(client, user.email)
        three = await login(client, user.email)
        assert (await client.post(f"{AUTH}/logout", headers=bearer(one["access_token"]))).status_code == 204
        deleted = await client.delete(f"{AUTH}/sessions/{two['session_id']}", headers=bearer(three["access_token"]))
        assert deleted.status_code == 204
        assert (await client.post(f"{AUTH}/logout-all", headers=bearer(three["access_token"]))).status_code == 204
        actions = await actions_for(app, user.id)
        assert {"auth.logout", "auth.session_revoked", "auth.logout_all"} <= set(actions)

    async def test_password_change(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(
            f"{AUTH}/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=user.headers,
        )
        assert response.status_code == 204
        [event] = [e for e in await all_events(app) if e.action == "auth.password_changed"]
        assert event.subject_user_id == user.id
        assert NEW_PASSWORD not in json.dumps(event.details)


class TestAdminEvents:
    async def test_admin_changes_are_logged(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await create_user(app, is_superuser=True)
        target = await create_user(app)
        headers = admin.headers
        base = f"/api/v1/admin/users/{target.id}"
        org = await client.post("/api/v1/organizations", json={"name": "Logged"}, headers=target.headers)
        assert (await client.patch(base, json={"full_name": "Z"}, headers=headers)).status_code == 200
        assert (
            await client.post(f"{base}/credits", json={"amount": 5, "reason": "thanks"}, headers=headers)
        ).status_code == 200
        assert (await client.delete(f"{base}/sessions", headers=headers)).status_code == 204
        org_id = org.json()["id"]
        assert (await client.delete(f"/api/v1/admin/organizations/{org_id}", headers=headers)).status_code == 204
        assert (await client.delete(base, headers=headers)).status_code == 204
        by_admin = {e.action for e in await all_events(app) if e.actor_id == admin.id}
        assert {
            "admin.user_updated",
            "credits.adjusted",
            "admin.sessions_revoked",
            "admin.org_deleted",
            "admin.user_deleted",
        } <= by_admin


class TestNoSecrets:
    async def test_details_never_hold_passwords_tokens_or_hashes(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        email = unique_email("scan")
        register = await client.post(f"{AUTH}/register", json={"email": email, "password": DEFAULT_PASSWORD})
        assert register.status_code == 201
        await client.post(f"{AUTH}/login", json={"email": email, "password": WRONG_PASSWORD})
        tokens = await login(client, email)
        rotated = (await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
        await client.post(f"{AUTH}/refresh", json={"refresh_token": rotated["refresh_token"]})
        await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})  # reuse
        fresh = await login(client, email)
        await client.post(
            f"{AUTH}/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(fresh["access_token"]),
        )
        await client.post(f"{AUTH}/password-reset/request", json={"email": email})
        org = await client.post("/api/v1/organizations", json={"name": "Scan"}, headers=bearer(fresh["access_token"]))
        invitation = await client.post(
            f"/api/v1/organizations/{org.json()['id']}/invitations",
            json={"email": unique_email("invitee"), "role": "member"},
            headers=bearer(fresh["access_token"]),
        )
        admin = await create_user(app, is_superuser=True)
        await client.post(
            f"/api/v1/admin/users/{register.json()['id']}/credits",
            json={"amount": 7, "reason": "scan"},
            headers=admin.headers,
        )
        await client.post(f"{AUTH}/logout", headers=bearer(fresh["access_token"]))

        async with state_of(app).sessionmaker() as session:
            hashes = [h for h in await session.scalars(select(User.hashed_password)) if h]
        secrets = [
            DEFAULT_PASSWORD,
            WRONG_PASSWORD,
            NEW_PASSWORD,
            tokens["access_token"],
            tokens["refresh_token"],
            rotated["refresh_token"],
            fresh["access_token"],
            fresh["refresh_token"],
            admin.access_token,
            *hashes,
        ]
        if invitation.status_code == 201:
            secrets.append(invitation.json()["token"])
        events = await all_events(app)
        assert len(events) >= 10
        dumped = json.dumps([event.details for event in events])
        for secret in secrets:
            assert secret not in dumped
        assert "$argon2" not in dumped

    async def test_writer_redacts_secret_keys(self, app: FastAPI) -> None:
        async with state_of(app).data.transaction() as tx:
            event = await audit_service.record(
                tx, "test.event", details={"password": "p", "refresh_token": "r", "email": "e@x.io"}
            )
        assert event.details == {"password": "[redacted]", "refresh_token": "[redacted]", "email": "e@x.io"}

    async def test_record_commits_or_rolls_back_with_its_transaction(self, app: FastAPI) -> None:
        async with state_of(app).data.transaction() as tx:
            await audit_service.record(tx, "test.core", details={"token": "t", "n": 1})
        with pytest.raises(RuntimeError):
            async with state_of(app).data.transaction() as tx:
                await audit_service.record(tx, "test.rolled_back")
                raise RuntimeError("the change it describes failed")
        events = await all_events(app)
        assert [(e.action, e.details) for e in events] == [("test.core", {"token": "[redacted]", "n": 1})]

    @requires_postgres()
    async def test_insert_from_redacts_secret_keys(self, app: FastAPI) -> None:
        """The event a single statement writes (insert_from, PostgreSQL) follows record()'s rules."""
        user_id = uuid.uuid4()
        rows = select(literal(user_id, Uuid).label("user_id")).cte("rows")
        statement = audit_service.insert_from(
            rows,
            literal("test.statement", String),
            actor_id=rows.c.user_id,
            subject_user_id=rows.c.user_id,
            ip_address=literal("10.0.0.3", String),
            details={"password": literal("p", String), "email": literal("e@x.io", String), "n": literal(2)},
            created_at=literal(utcnow(), UTCDateTime),
        )
        async with state_of(app).engine.begin() as connection:
            await connection.execute(statement)
        (event,) = await all_events(app)
        assert (event.action, event.actor_id, event.subject_user_id, event.ip_address) == (
            "test.statement",
            user_id,
            user_id,
            "10.0.0.3",
        )
        assert event.details == {"password": "[redacted]", "email": "e@x.io", "n": 2}
