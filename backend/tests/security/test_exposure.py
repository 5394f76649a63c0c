"""Secrets never leak: no response, log line or audit event carries a password, a refresh token (outside the
answer that issues it), a hash, or SECRET_KEY.

The main flows run against a fresh app while every logger records at DEBUG; then every response body and
header, every log line and every audit row is scanned for the exact values used in the run. One-time tokens
(verification, reset, invitation) may appear in the console mail backend's log only outside production, and the
invitation token in the answer that creates the invitation (the contract shows it once).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.integrations.email.sender import EmailSender
from app.state import state_of
from tests.conftest import AppFactory, client_for
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

API = "/api/v1"
ISSUING = ("/auth/login", "/auth/token", "/auth/refresh")  # the answers that hand out a refresh token
HASH_SHAPES = re.compile(r"\$argon2id?\$|\$2[aby]\$\d\d\$")


@dataclass
class Run:
    app: FastAPI
    client: httpx.AsyncClient
    responses: list[httpx.Response] = field(default_factory=list)
    passwords: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)
    one_time_tokens: set[str] = field(default_factory=set)

    async def call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = await self.client.request(method, f"{API}{path}", **kwargs)  # type: ignore[arg-type]
        self.responses.append(response)
        if path in ISSUING and response.status_code == 200:
            self.refresh_tokens.add(response.json()["refresh_token"])
            self.access_tokens.add(response.json()["access_token"])
        return response

    def mailed_token(self, to: str, kind: str) -> str:
        sender: EmailSender = state_of(self.app).email_sender
        mails = [mail for mail in sender.outbox if mail.to == to]
        match = re.search(rf"/{kind}\?token=([A-Za-z0-9_\-]+)", mails[-1].text)
        assert match, mails[-1].text
        self.one_time_tokens.add(match.group(1))
        return match.group(1)


async def stored_hashes(app: FastAPI) -> set[str]:
    """Every hash and salt the database holds: none may ever be shown."""
    queries = [
        "SELECT hashed_password FROM users WHERE hashed_password IS NOT NULL",
        "SELECT token_salt FROM auth_sessions",
        "SELECT token_hash FROM email_tokens",
        "SELECT token_hash FROM invitations",
    ]
    values: set[str] = set()
    async with state_of(app).engine.connect() as connection:
        for sql in queries:
            values.update(str(row[0]) for row in await connection.execute(text(sql)))
    return values


async def audit_rows(app: FastAPI) -> list[str]:
    async with state_of(app).engine.connect() as connection:
        result = await connection.execute(text("SELECT * FROM audit_events"))
        return [" ".join(str(value) for value in row) for row in result]


async def main_flows(run: Run) -> None:
    """Register, verify, login, refresh, password change, reset, invitations, sessions, logout, admin views."""
    email, invitee = "exposed@example.com", "invitee@example.com"
    first, second, third = "First-secret-pass-271", "Second-secret-pass-828", "Third-secret-pass-182"
    wrong = "Wrong-secret-pass-459"
    run.passwords |= {first, second, third, wrong}

    assert (await run.call("POST", "/auth/register", json={"email": email, "password": first})).status_code == 201
    confirm = {"token": run.mailed_token(email, "verify-email")}
    assert (await run.call("POST", "/auth/verify-email/confirm", json=confirm)).status_code == 200
    assert (await run.call("POST", "/auth/login", json={"email": email, "password": wrong})).status_code == 401
    login = await run.call("POST", "/auth/login", json={"email": email, "password": first, "device_name": "laptop"})
    tokens = login.json()
    refreshed = await run.call("POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    again = await run.call("POST", "/auth/refresh", json={"refresh_token": tokens["refresh_token"]})  # within grace
    assert again.status_code == 200
    headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    change = {"current_password": first, "new_password": second}
    assert (await run.call("POST", "/auth/password", json=change, headers=headers)).status_code == 204
    wrong_change = {"current_password": wrong, "new_password": third}
    assert (await run.call("POST", "/auth/password", json=wrong_change, headers=headers)).status_code == 400

    assert (await run.call("POST", "/auth/password-reset/request", json={"email": email})).status_code == 202
    assert (
        await run.call("POST", "/auth/password-reset/request", json={"email": "nobody@example.com"})
    ).status_code == 202
    reset = {"token": run.mailed_token(email, "reset-password"), "new_password": third}
    assert (await run.call("POST", "/auth/password-reset/confirm", json=reset)).status_code == 204
    form = {"grant_type": "password", "username": email, "password": third}
    token_login = await run.call("POST", "/auth/token", data=form)
    assert token_login.status_code == 200
    headers = {"Authorization": f"Bearer {token_login.json()['access_token']}"}

    org = await run.call("POST", "/organizations", json={"name": "Exposure"}, headers=headers)
    org_id = org.json()["id"]
    invitation = await run.call(
        "POST", f"/organizations/{org_id}/invitations", json={"email": invitee, "role": "admin"}, headers=headers
    )
    run.one_time_tokens.add(invitation.json()["token"])
    assert (await run.call("POST", "/auth/register", json={"email": invitee, "password": first})).status_code == 201
    guest_login = await run.call("POST", "/auth/login", json={"email": invitee, "password": first})
    guest = {"Authorization": f"Bearer {guest_login.json()['access_token']}"}
    accept = {"token": invitation.json()["token"]}
    assert (await run.call("POST", "/invitations/accept", json=accept, headers=guest)).status_code == 200
    for path in (
        "/users/me",
        "/profile",
        "/auth/sessions",
        "/credits/transactions",
        f"/organizations/{org_id}/members",
    ):
        assert (await run.call("GET", path, headers=headers)).status_code == 200
    for path in (f"/organizations/{org_id}/invitations", f"/organizations/{org_id}/audit-events"):
        assert (await run.call("GET", path, headers=headers)).status_code == 200
    assert (await run.call("POST", "/auth/logout", headers=guest)).status_code == 204

    root = await create_user(run.app, is_superuser=True)
    me = (await run.call("GET", "/users/me", headers=headers)).json()
    for path in (
        "/admin/users",
        f"/admin/users/{me['id']}",
        f"/admin/users/{me['id']}/sessions",
        "/admin/audit-events",
    ):
        assert (await run.call("GET", path, headers=root.headers)).status_code == 200
    patch = {"full_name": "Renamed"}
    assert (await run.call("PATCH", f"/admin/users/{me['id']}", json=patch, headers=root.headers)).status_code == 200


def leaks(haystack: str, needles: set[str]) -> list[str]:
    return [needle[:12] + "…" for needle in needles if needle and needle in haystack]


class TestMainFlows:
    async def test_nothing_secret_in_answers_logs_or_audit(
        self, make_app: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        # What LOG_LEVEL=DEBUG turns on (the app's loggers), with SQL echo on too. Third-party DEBUG logging is
        # not the app's to enable (aiosqlite's logs statements with their parameters): see docs/SECURITY.md.
        caplog.set_level(logging.DEBUG, logger="app")
        app = await make_app(DATABASE_ECHO=True)
        async with client_for(app) as client:
            run = Run(app=app, client=client)
            await main_flows(run)

        secret_key = state_of(app).settings.SECRET_KEY
        hashes = await stored_hashes(app)
        assert len(hashes) >= 8 and run.refresh_tokens and run.one_time_tokens and len(run.passwords) == 4

        for response in run.responses:
            path = response.request.url.path.removeprefix(API)
            shown = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
            where = f"{response.request.method} {path}"
            assert leaks(shown, run.passwords | hashes | {secret_key}) == [], where
            assert not HASH_SHAPES.search(shown), where
            if path not in ISSUING:
                assert leaks(shown, run.refresh_tokens) == [], where
            if not path.endswith("/invitations") or response.request.method != "POST":
                assert leaks(shown, run.one_time_tokens) == [], where

        assert caplog.records
        for record in caplog.records:
            line = record.getMessage()
            secrets = run.passwords | run.refresh_tokens | run.access_tokens | hashes | {secret_key}
            assert leaks(line, secrets) == [], (record.name, line[:200])
            assert not HASH_SHAPES.search(line), (record.name, line[:200])
            if not (record.name == "app.email" and "(console backend)" in line):
                assert leaks(line, run.one_time_tokens) == [], (record.name, line[:200])

        audit = await audit_rows(app)
        assert len(audit) >= 8
        everything = run.passwords | run.refresh_tokens | run.access_tokens | run.one_time_tokens | hashes
        for row in audit:
            assert leaks(row, everything | {secret_key}) == [], row[:200]
            assert not HASH_SHAPES.search(row)


class TestConsoleMail:
    async def test_tokens_logged_outside_production(self, app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
        user = await create_user(app)
        with caplog.at_level(logging.INFO, logger="app.email"):
            async with client_for(app) as client:
                response = await client.post(f"{API}/auth/password-reset/request", json={"email": user.email})
        assert response.status_code == 202
        token = re.search(r"token=([A-Za-z0-9_\-]+)", state_of(app).email_sender.outbox[-1].text)
        assert token and token.group(1) in caplog.text  # a developer reads the link in the log

    async def test_no_token_logged_in_production(self, make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
        app = await make_app(ENVIRONMENT="production", EMAIL_BACKEND="console")
        user = await create_user(app)
        with caplog.at_level(logging.INFO, logger="app.email"):
            async with client_for(app) as client:
                response = await client.post(f"{API}/auth/password-reset/request", json={"email": user.email})
        assert response.status_code == 202
        body = state_of(app).email_sender.outbox[-1].text
        token = re.search(r"token=([A-Za-z0-9_\-]+)", body)
        assert token is not None
        assert token.group(1) not in caplog.text
        assert "body not logged" in caplog.text and user.email in caplog.text


class TestViewsNeverShowHashes:
    async def test_me_and_admin_views(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        root = await create_user(app, is_superuser=True)
        user = await create_user(app)
        views = [
            ("/users/me", user.headers),
            ("/auth/sessions", user.headers),
            ("/admin/users", root.headers),
            (f"/admin/users/{user.id}", root.headers),
            (f"/admin/users/{user.id}/sessions", root.headers),
            ("/admin/audit-events", root.headers),
        ]
        forbidden_keys = {"hashed_password", "password", "token_hash", "token_salt", "refresh_token", "secret"}
        for path, headers in views:
            response = await client.get(f"{API}{path}", headers=headers)
            assert response.status_code == 200, path
            assert not HASH_SHAPES.search(response.text), path
            keys = set(re.findall(r'"([a-z_]+)":', response.text))
            assert not keys & forbidden_keys, (path, keys & forbidden_keys)
