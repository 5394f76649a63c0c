"""Verification and password reset end to end: a real SMTP server on loopback, tokens read from the mails."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select, text, update
from starlette.types import Message, Receive, Scope, Send

from app.auth import service as auth_service
from app.auth.models import AuthSession, EmailToken, EmailTokenPurpose
from app.core.db import utcnow
from app.state import state_of
from app.users import service as user_service
from app.users.models import AuthProvider, UserRow
from tests.conftest import AppFactory, client_for
from tests.factories import DEFAULT_PASSWORD, create_user, load_user, unique_email
from tests.integrations.smtp import Delivered, RecordingHandler, free_port, smtp_server

pytestmark = pytest.mark.asyncio

FRONTEND = "https://app.example.test"
NEW_PASSWORD = "Another-Good-Passphrase-77"


@pytest.fixture
def smtp() -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server() as server:
        yield server


@pytest_asyncio.fixture
async def mail_app(make_app: AppFactory, smtp: tuple[int, RecordingHandler]) -> FastAPI:
    port, _ = smtp
    return await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port, FRONTEND_URL=FRONTEND)


@pytest_asyncio.fixture
async def mc(mail_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(mail_app) as c:
        yield c


@pytest.fixture
def outbox(smtp: tuple[int, RecordingHandler]) -> RecordingHandler:
    return smtp[1]


def token_of(delivered: Delivered, path: str) -> str:
    link = delivered.link(path)
    assert link.startswith(f"{FRONTEND}/{path}?token=")
    return unquote(parse_qs(urlsplit(link).query)["token"][0])


def only_mail(outbox: RecordingHandler, to: str) -> Delivered:
    mails = outbox.to(to)
    assert len(mails) == 1, [m.message["Subject"] for m in mails]
    return mails[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 201, response.text


async def login_status(client: httpx.AsyncClient, email: str, password: str) -> int:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    return response.status_code


async def request_reset(client: httpx.AsyncClient, email: str) -> httpx.Response:
    response = await client.post("/api/v1/auth/password-reset/request", json={"email": email})
    assert response.status_code == 202, response.text
    return response


async def reset_token(client: httpx.AsyncClient, outbox: RecordingHandler, email: str) -> str:
    before = len(outbox.to(email))
    await request_reset(client, email)
    mails = outbox.to(email)
    assert len(mails) == before + 1
    return token_of(mails[-1], "reset-password")


async def expire_tokens(app: FastAPI, email: str) -> None:
    async with state_of(app).sessionmaker() as session:
        await session.execute(
            update(EmailToken).where(EmailToken.email == email).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


class TestRegisterMail:
    async def test_verification_mail_then_confirm(self, mc: httpx.AsyncClient, outbox: RecordingHandler) -> None:
        email = unique_email()
        await register(mc, email)
        mail = only_mail(outbox, email)
        assert mail.message["Subject"] == "Confirm your email address"
        token = token_of(mail, "verify-email")
        assert f"{FRONTEND}/verify-email?token={token}" in mail.html
        response = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})
        assert response.status_code == 200, response.text
        assert response.json()["is_verified"] is True
        tokens = (await mc.post("/api/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})).json()
        me = await mc.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
        assert me.json()["is_verified"] is True

    async def test_smtp_refusing_still_201(self, make_app: AppFactory) -> None:
        with smtp_server(refuse="550 Mailbox unavailable") as (port, handler):
            application = await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port)
            async with client_for(application) as c:
                await register(c, unique_email())
        assert handler.messages == []

    async def test_smtp_down_still_201(self, make_app: AppFactory) -> None:
        application = await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=free_port())
        async with client_for(application) as c:
            await register(c, unique_email())
        assert state_of(application).email_sender.failed == 1


class TestVerifyEmailRequest:
    async def test_unverified_gets_mail(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=False)
        response = await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        assert response.status_code == 202
        token = token_of(only_mail(outbox, user.email), "verify-email")
        confirmed = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})
        assert confirmed.status_code == 200
        assert (await load_user(mail_app, user.id)).is_verified is True  # type: ignore[union-attr]

    async def test_already_verified_202_no_mail(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=True)
        response = await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        assert response.status_code == 202
        assert outbox.to(user.email) == []

    async def test_anonymous_401(self, mc: httpx.AsyncClient) -> None:
        response = await mc.post("/api/v1/auth/verify-email/request")
        assert response.status_code == 401

    async def test_smtp_refusing_still_202(self, make_app: AppFactory) -> None:
        with smtp_server(refuse="550 No such user") as (port, handler):
            application = await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port)
            user = await create_user(application, is_verified=False)
            async with client_for(application) as c:
                response = await c.post("/api/v1/auth/verify-email/request", headers=user.headers)
        assert response.status_code == 202
        assert handler.messages == []


class TestVerifyEmailConfirm:
    async def test_single_use(self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler) -> None:
        user = await create_user(mail_app, is_verified=False)
        await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        token = token_of(only_mail(outbox, user.email), "verify-email")
        assert (await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})).status_code == 200
        again = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})
        assert again.status_code == 400
        assert again.json()["code"] == "invalid_token"

    async def test_expired_400(self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler) -> None:
        user = await create_user(mail_app, is_verified=False)
        await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        token = token_of(only_mail(outbox, user.email), "verify-email")
        await expire_tokens(mail_app, user.email)
        response = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_token"
        assert (await load_user(mail_app, user.id)).is_verified is False  # type: ignore[union-attr]

    async def test_unknown_token_400(self, mc: httpx.AsyncClient) -> None:
        response = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": "not-a-token-we-issued"})
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_token"

    async def test_reset_token_is_not_a_verification_token(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=False)
        token = await reset_token(mc, outbox, user.email)
        response = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": token})
        assert response.status_code == 400

    async def test_token_of_old_address_does_not_verify_changed_address(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=False)
        await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        old_token = token_of(only_mail(outbox, user.email), "verify-email")
        new_email = unique_email("moved")
        body = {"email": new_email, "current_password": DEFAULT_PASSWORD}
        assert (await mc.post("/api/v1/users/me/email", headers=user.headers, json=body)).status_code == 202
        change_token = token_of(only_mail(outbox, new_email), "confirm-email-change")
        changed = await mc.post("/api/v1/users/me/email/confirm", json={"token": change_token})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["email"], changed.json()["is_verified"]) == (new_email, True)
        response = await mc.post("/api/v1/auth/verify-email/confirm", json={"token": old_token})
        assert response.status_code == 400

    async def test_tokens_long_and_stored_only_as_hashes(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=False)
        await mc.post("/api/v1/auth/verify-email/request", headers=user.headers)
        tokens = [token_of(only_mail(outbox, user.email), "verify-email"), await reset_token(mc, outbox, user.email)]
        async with state_of(mail_app).sessionmaker() as session:
            rows = (await session.execute(text("SELECT * FROM email_tokens"))).all()
            hashes = set((await session.scalars(select(EmailToken.token_hash))).all())
        dump = repr(rows)
        for token in tokens:
            assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 32  # >= 256 bits
            assert token not in dump
            assert hashlib.sha256(token.encode()).hexdigest() in hashes


class TestEmailChangeMails:
    async def test_link_to_the_new_address_notice_to_the_old(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=True)
        new_email = unique_email("new")
        body = {"email": new_email.upper(), "current_password": DEFAULT_PASSWORD}
        response = await mc.post("/api/v1/users/me/email", headers=user.headers, json=body)
        assert response.status_code == 202
        confirmation = only_mail(outbox, new_email)
        assert confirmation.message["Subject"] == "Confirm your new email address"
        token = token_of(confirmation, "confirm-email-change")
        assert f"{FRONTEND}/confirm-email-change?token={token}" in confirmation.html
        notice = only_mail(outbox, user.email)
        assert notice.message["Subject"] == "A change of your email address was requested"
        assert "token=" not in notice.text and "token=" not in notice.html and FRONTEND not in notice.html
        assert new_email in notice.text
        assert (await mc.get("/api/v1/users/me", headers=user.headers)).json()["email"] == user.email


class TestPasswordResetRequest:
    async def test_mail_with_link(self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler) -> None:
        user = await create_user(mail_app)
        response = await request_reset(mc, f"  {user.email.upper()} ")
        assert response.json() == {"status": "accepted"}
        mail = only_mail(outbox, user.email)
        assert mail.message["Subject"] == "Reset your password"
        token = token_of(mail, "reset-password")
        assert f"{FRONTEND}/reset-password?token={token}" in mail.html

    async def test_unknown_email_same_answer_no_mail(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app)
        known = await request_reset(mc, user.email)
        unknown = await request_reset(mc, unique_email("nobody"))
        assert (unknown.status_code, unknown.content) == (known.status_code, known.content)
        assert [m.rcpt_tos for m in outbox.messages] == [[user.email]]

    async def test_answered_before_any_address_is_looked_up(
        self, mail_app: FastAPI, outbox: RecordingHandler, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The request does the same (nothing) for every address: its answer is sent before the lookup starts,
        so neither the answer nor its time can depend on the account (the times: bench/bench_timing.py)."""
        events: list[str] = []
        real = auth_service.request_password_reset

        async def recorded(*args: Any, **kwargs: Any) -> tuple[UserRow, str] | None:
            events.append("lookup")
            return await real(*args, **kwargs)

        monkeypatch.setattr(auth_service, "request_password_reset", recorded)

        async def recording_app(scope: Scope, receive: Receive, send: Send) -> None:
            async def watched(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    events.append("answered")
                await send(message)

            await mail_app(scope, receive, watched)

        user = await create_user(mail_app)
        answers = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=recording_app), base_url="http://test") as c:
            for email in (user.email, unique_email("nobody")):
                events.clear()
                answers.append(await request_reset(c, email))  # the transport waits for the background job too
                assert events == ["answered", "lookup"], email
        assert answers[0].content == answers[1].content
        assert [m.rcpt_tos for m in outbox.messages] == [[user.email]]

    async def test_deactivated_account_no_mail(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_active=False)
        await request_reset(mc, user.email)
        assert outbox.messages == []

    async def test_supabase_only_account_no_mail(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        email = unique_email("supa")
        async with state_of(mail_app).data.transaction() as tx:
            await user_service.create_user(
                tx, email=email, hashed_password=None, auth_provider=AuthProvider.SUPABASE, is_verified=True
            )
        await request_reset(mc, email)
        assert outbox.messages == []

    async def test_new_request_spends_older_tokens(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app)
        first = await reset_token(mc, outbox, user.email)
        second = await reset_token(mc, outbox, user.email)
        old = await mc.post("/api/v1/auth/password-reset/confirm", json={"token": first, "new_password": NEW_PASSWORD})
        assert old.status_code == 400
        assert old.json()["code"] == "invalid_token"
        new = await mc.post("/api/v1/auth/password-reset/confirm", json={"token": second, "new_password": NEW_PASSWORD})
        assert new.status_code == 204

    async def test_smtp_refusing_still_202(self, make_app: AppFactory) -> None:
        with smtp_server(refuse="550 Mailbox unavailable") as (port, handler):
            application = await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port)
            user = await create_user(application)
            async with client_for(application) as c:
                await request_reset(c, user.email)
        assert handler.messages == []
        assert state_of(application).email_sender.failed == 1

    async def test_smtp_down_still_202(self, make_app: AppFactory) -> None:
        application = await make_app(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=free_port())
        user = await create_user(application)
        async with client_for(application) as c:
            await request_reset(c, user.email)
        assert state_of(application).email_sender.failed == 1

    async def test_invalid_email_422(self, mc: httpx.AsyncClient) -> None:
        response = await mc.post("/api/v1/auth/password-reset/request", json={"email": "not-an-email"})
        assert response.status_code == 422


class TestPasswordResetConfirm:
    async def test_ok_new_password_old_sessions_dead_email_verified(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app, is_verified=False)
        second = (await mc.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})).json()
        token = await reset_token(mc, outbox, user.email)
        response = await mc.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 204
        assert await login_status(mc, user.email, NEW_PASSWORD) == 200
        assert await login_status(mc, user.email, user.password) == 401
        for access in (user.access_token, second["access_token"]):
            assert (await mc.get("/api/v1/users/me", headers=bearer(access))).status_code == 401
        for refresh in (user.refresh_token, second["refresh_token"]):
            assert (await mc.post("/api/v1/auth/refresh", json={"refresh_token": refresh})).status_code == 401
        assert (await load_user(mail_app, user.id)).is_verified is True  # type: ignore[union-attr]
        async with state_of(mail_app).sessionmaker() as session:
            live = await session.scalars(
                select(AuthSession).where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            )
            assert len(list(live)) == 1  # the login with the new password only

    async def test_single_use(self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler) -> None:
        user = await create_user(mail_app)
        token = await reset_token(mc, outbox, user.email)
        body = {"token": token, "new_password": NEW_PASSWORD}
        assert (await mc.post("/api/v1/auth/password-reset/confirm", json=body)).status_code == 204
        again = await mc.post("/api/v1/auth/password-reset/confirm", json={**body, "new_password": "Third-Pass-99x"})
        assert again.status_code == 400
        assert again.json()["code"] == "invalid_token"
        assert await login_status(mc, user.email, NEW_PASSWORD) == 200

    async def test_expired_400(self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler) -> None:
        user = await create_user(mail_app)
        token = await reset_token(mc, outbox, user.email)
        await expire_tokens(mail_app, user.email)
        response = await mc.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_token"
        assert await login_status(mc, user.email, user.password) == 200

    async def test_unknown_token_400(self, mc: httpx.AsyncClient) -> None:
        response = await mc.post(
            "/api/v1/auth/password-reset/confirm", json={"token": "x" * 43, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_token"

    async def test_verification_token_is_not_a_reset_token(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        email = unique_email()
        await register(mc, email)
        token = token_of(only_mail(outbox, email), "verify-email")
        response = await mc.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400

    async def test_weak_password_422_keeps_token(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app)
        token = await reset_token(mc, outbox, user.email)
        for weak in ("password123", user.email):
            response = await mc.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": weak})
            assert response.status_code == 422
        ok = await mc.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert ok.status_code == 204

    async def test_deactivated_after_request_400(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app)
        token = await reset_token(mc, outbox, user.email)
        async with state_of(mail_app).data.transaction() as tx:
            assert await user_service.change_user(tx, user.id, is_active=False) is not None
        response = await mc.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
        )
        assert response.status_code == 400

    async def test_purpose_column_matches(
        self, mc: httpx.AsyncClient, mail_app: FastAPI, outbox: RecordingHandler
    ) -> None:
        user = await create_user(mail_app)
        await reset_token(mc, outbox, user.email)
        async with state_of(mail_app).sessionmaker() as session:
            row = await session.scalar(select(EmailToken).where(EmailToken.user_id == user.id))
        assert row is not None
        assert row.purpose == EmailTokenPurpose.PASSWORD_RESET
        assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)
