"""TOTP multi-factor authentication: enrolment, confirmation, login then verify, turning it off."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlparse

import httpx
import jwt
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth import mfa, totp
from app.auth import service as auth_service
from app.auth.models import AuthSession, MfaChallenge, MfaFactor, MfaRecoveryCode
from app.core import security
from app.core.db import utcnow
from app.state import state_of
from app.users import service as user_service
from app.users.models import User
from tests import factories, supabase_tokens
from tests.admin.test_router import ADMIN_ROUTES
from tests.auth.mfa_helpers import (
    MFA,
    code_at,
    enable_mfa,
    enroll,
    forget_used_codes,
    login_aal2,
    start_login,
)
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.core.test_data import _flat, _sql, statements_sent
from tests.factories import create_user, load_user
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, claims, mint

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

ME = "/api/v1/users/me"
LOGIN = "/api/v1/auth/login"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(access_token: str) -> dict[str, object]:
    return jwt.decode(access_token, options={"verify_signature": False})


async def actions(app: FastAPI, user_id: uuid.UUID) -> list[str]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.subject_user_id == user_id, AuditEvent.action.like("mfa.%"))
            .order_by(AuditEvent.created_at)
        )
        return list(rows)


async def mfa_enabled(client: httpx.AsyncClient, user: factories.TestUser) -> bool:
    response = await client.get(ME, headers=user.headers)
    assert response.status_code == 200, response.text
    return bool(response.json()["mfa_enabled"])


class TestEnroll:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(
            f"{MFA}/totp/enroll", json={"current_password": user.password}, headers=user.headers
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"secret", "otpauth_uri"}
        uri = urlparse(body["otpauth_uri"])
        assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
        query = parse_qs(uri.query)
        assert query["secret"] == [body["secret"]]
        assert query["issuer"] == [state_of(app).settings.APP_NAME]
        assert unquote(uri.path) == f"/{state_of(app).settings.APP_NAME}:{user.email}"
        assert len(body["secret"]) >= 32
        # Pending only: login still answers tokens.
        assert not await mfa_enabled(client, user)
        login = await client.post(LOGIN, json={"email": user.email, "password": user.password})
        assert "access_token" in login.json()

    async def test_secret_is_encrypted_at_rest(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret = await enroll(client, user)
        async with state_of(app).sessionmaker() as session:
            stored = await session.scalar(select(MfaFactor.secret_encrypted).where(MfaFactor.user_id == user.id))
        assert stored is not None
        assert secret not in stored
        assert secret.lower() not in stored.lower()

    async def test_wrong_password_400(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(f"{MFA}/totp/enroll", json={"current_password": "nope-nope"}, headers=user.headers)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_password"
        async with state_of(app).sessionmaker() as session:
            assert await session.get(MfaFactor, user.id) is None

    async def test_replaces_pending_enrolment(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = await enroll(client, user)
        second = await enroll(client, user)
        assert first != second
        stale = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(first)}, headers=user.headers)
        if code_at(first) != code_at(second):  # one chance in a million that both give the same code
            assert stale.status_code == 400
            assert stale.json()["code"] == "invalid_code"
        ok = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(second)}, headers=user.headers)
        assert ok.status_code == 200, ok.text

    async def test_already_enabled_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        response = await client.post(
            f"{MFA}/totp/enroll", json={"current_password": user.password}, headers=user.headers
        )
        assert response.status_code == 409
        assert response.json()["code"] == "mfa_already_enabled"

    async def test_without_token_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(f"{MFA}/totp/enroll", json={"current_password": "whatever-123"})
        assert response.status_code == 401

    async def test_supabase_user_400(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer))
        async with client_for(application) as c:
            response = await c.post(
                f"{MFA}/totp/enroll", json={"current_password": "whatever-123"}, headers=bearer(token)
            )
        assert response.status_code == 400
        assert response.json()["code"] == "not_own_session"


class TestConfirm:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret = await enroll(client, user)
        response = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(secret)}, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        codes = response.json()["recovery_codes"]
        assert len(codes) == 10
        assert len(set(codes)) == 10
        me = (await client.get(ME, headers=user.headers)).json()
        assert me["mfa_enabled"] is True
        assert me["aal"] == "aal2"  # this session just proved both factors
        assert await actions(app, user.id) == ["mfa.enabled"]
        async with state_of(app).sessionmaker() as session:
            hashes = list(
                await session.scalars(select(MfaRecoveryCode.code_hash).where(MfaRecoveryCode.user_id == user.id))
            )
        assert len(hashes) == 10
        assert not set(hashes) & set(codes)
        assert not any(code.replace("-", "") in h for code in codes for h in hashes)

    async def test_refresh_keeps_aal2(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert refreshed.status_code == 200
        assert claims_of(refreshed.json()["access_token"])["aal"] == "aal2"

    async def test_wrong_code_400_changes_nothing(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret = await enroll(client, user)
        wrong = "000000" if code_at(secret) != "000000" else "111111"
        response = await client.post(f"{MFA}/totp/confirm", json={"code": wrong}, headers=user.headers)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_code"
        assert not await mfa_enabled(client, user)
        assert (await client.get(ME, headers=user.headers)).json()["aal"] == "aal1"
        async with state_of(app).sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(MfaRecoveryCode))
        assert count == 0
        assert await actions(app, user.id) == ["mfa.failed"]
        # The pending secret is still there: the right code works.
        ok = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(secret)}, headers=user.headers)
        assert ok.status_code == 200

    async def test_without_enrolment_400(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(f"{MFA}/totp/confirm", json={"code": "123456"}, headers=user.headers)
        assert response.status_code == 400
        assert response.json()["code"] == "mfa_not_enrolled"

    async def test_already_enabled_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        response = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(secret)}, headers=user.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "mfa_already_enabled"


class TestLoginWithMfa:
    async def test_login_answers_a_challenge(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        response = await client.post(LOGIN, json={"email": user.email, "password": user.password})
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"mfa_required", "mfa_token", "expires_in"}
        assert body["mfa_required"] is True
        assert body["expires_in"] == 300
        assert response.headers["cache-control"] == "no-store"

    async def test_token_endpoint_answers_a_challenge(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        response = await client.post(
            "/api/v1/auth/token", data={"grant_type": "password", "username": user.email, "password": user.password}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mfa_required"] is True
        assert "access_token" not in body

    async def test_wrong_password_still_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        response = await client.post(LOGIN, json={"email": user.email, "password": "wrong-password-1"})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"

    async def test_verify_gives_aal2_tokens(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert {"access_token", "refresh_token", "token_type", "expires_in", "session_id"} <= set(body)
        assert claims_of(body["access_token"])["aal"] == "aal2"
        me = (await client.get(ME, headers=bearer(body["access_token"]))).json()
        assert (me["aal"], me["mfa_enabled"]) == ("aal2", True)
        assert await actions(app, user.id) == ["mfa.enabled", "mfa.verified"]

    async def test_token_is_single_use(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        first = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert first.status_code == 200
        await forget_used_codes(app, user.id)
        again = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert again.status_code == 401
        assert again.json()["code"] == "mfa_token_invalid"

    async def test_replayed_code_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        code = code_at(secret)
        first = await client.post(f"{MFA}/verify", json={"mfa_token": await start_login(client, user), "code": code})
        assert first.status_code == 200
        replay = await client.post(f"{MFA}/verify", json={"mfa_token": await start_login(client, user), "code": code})
        assert replay.status_code == 401
        assert replay.json()["code"] == "invalid_code"

    async def test_clock_skew_of_one_step(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        too_old = code_at(secret, steps=-3)
        if too_old not in {code_at(secret, steps=s) for s in (-1, 0, 1)}:
            response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": too_old})
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_code"
        previous = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret, steps=-1)})
        assert previous.status_code == 200, previous.text

    async def test_five_wrong_codes_spend_the_token(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        good = {code_at(secret, steps=s) for s in (-1, 0, 1)}
        wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in good)
        for _ in range(5):
            response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": wrong})
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_code"
        right = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert right.status_code == 401
        assert right.json()["code"] == "mfa_token_invalid"
        assert (await actions(app, user.id)).count("mfa.failed") == 5
        # A new login is a new token with its own tries.
        fresh = await client.post(
            f"{MFA}/verify", json={"mfa_token": await start_login(client, user), "code": code_at(secret)}
        )
        assert fresh.status_code == 200

    async def test_expired_token_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        async with state_of(app).sessionmaker() as session:
            await session.execute(update(MfaChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
        response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 401
        assert response.json()["code"] == "mfa_token_invalid"
        async with state_of(app).sessionmaker() as session:
            assert await session.scalar(select(MfaFactor.last_used_step).where(MfaFactor.user_id == user.id)) is None

    @pytest.mark.parametrize("kind", ["garbage", "forged", "unknown"])
    async def test_bad_token_401(self, client: httpx.AsyncClient, app: FastAPI, kind: str) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        real = await start_login(client, user)
        token = {
            "garbage": "mfa.not-a-token",
            "forged": real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB"),
            "unknown": security.create_mfa_token(state_of(app).settings, challenge_id=uuid.uuid4(), user_id=user.id),
        }[kind]
        response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 401
        assert response.json()["code"] == "mfa_token_invalid"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_recovery_code_works_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        _, codes = await enable_mfa(client, app, user)
        typed = codes[0].upper().replace("-", " ")  # case, spaces and dashes do not matter
        first = await client.post(
            f"{MFA}/verify", json={"mfa_token": await start_login(client, user), "recovery_code": typed}
        )
        assert first.status_code == 200, first.text
        assert claims_of(first.json()["access_token"])["aal"] == "aal2"
        again = await client.post(
            f"{MFA}/verify", json={"mfa_token": await start_login(client, user), "recovery_code": codes[0]}
        )
        assert again.status_code == 401
        assert again.json()["code"] == "invalid_code"
        assert "mfa.recovery_code_used" in await actions(app, user.id)

    @pytest.mark.parametrize("body", [{}, {"code": "123456", "recovery_code": "abcd-efgh-jkmn"}])
    async def test_exactly_one_factor_422(self, client: httpx.AsyncClient, app: FastAPI, body: dict[str, str]) -> None:
        user = await create_user(app)
        await enable_mfa(client, app, user)
        response = await client.post(f"{MFA}/verify", json={"mfa_token": await start_login(client, user), **body})
        assert response.status_code == 422

    async def test_deactivated_user_cannot_verify(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        async with state_of(app).sessionmaker() as session:
            await session.execute(update(User).where(User.id == user.id).values(is_active=False))
            await session.commit()
        response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 401

    async def test_cookie_mode_sets_cookies_only_at_verify(self, make_app: AppFactory) -> None:
        application = await make_app(AUTH_REFRESH_COOKIE=True)
        user = await create_user(application)
        async with client_for(application) as c:
            secret, _ = await enable_mfa(c, application, user)
            login = await c.post(LOGIN, json={"email": user.email, "password": user.password})
            assert "set-cookie" not in login.headers
            verify = await c.post(
                f"{MFA}/verify", json={"mfa_token": login.json()["mfa_token"], "code": code_at(secret)}
            )
            assert verify.status_code == 200
            assert "set-cookie" in verify.headers


@requires_postgres()
class TestConcurrentVerify:
    async def test_same_code_on_two_logins_exactly_one_wins(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        tokens = [await start_login(client, user) for _ in range(6)]
        code = code_at(secret)
        answers = await asyncio.gather(
            *[client.post(f"{MFA}/verify", json={"mfa_token": t, "code": code}) for t in tokens]
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 401, 401, 401, 401, 401], [a.text for a in answers]
        assert {a.json()["code"] for a in answers if a.status_code == 401} == {"invalid_code"}
        async with state_of(app).sessionmaker() as session:
            aal2 = await session.scalar(
                select(func.count())
                .select_from(AuthSession)
                .where(AuthSession.user_id == user.id, AuthSession.aal == "aal2")
            )
        assert aal2 == 2  # the confirming session and the one winner

    async def test_one_token_twice_exactly_one_wins(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        _, codes = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        answers = await asyncio.gather(
            *[client.post(f"{MFA}/verify", json={"mfa_token": token, "recovery_code": c}) for c in codes[:4]]
        )
        assert sorted(a.status_code for a in answers) == [200, 401, 401, 401], [a.text for a in answers]
        async with state_of(app).sessionmaker() as session:
            used = await session.scalar(
                select(func.count()).select_from(MfaRecoveryCode).where(MfaRecoveryCode.used_at.is_not(None))
            )
        assert used == 1  # the losers' codes were given back (rolled back), not burnt

    async def test_same_recovery_code_twice_exactly_one_wins(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        _, codes = await enable_mfa(client, app, user)
        tokens = [await start_login(client, user) for _ in range(4)]
        answers = await asyncio.gather(
            *[client.post(f"{MFA}/verify", json={"mfa_token": t, "recovery_code": codes[1]}) for t in tokens]
        )
        assert sorted(a.status_code for a in answers) == [200, 401, 401, 401], [a.text for a in answers]


@requires_postgres()
class TestWhatVerifySends:
    """The second step of a login is one transaction of Core statements on the asyncpg pool, nothing of the ORM;
    a wrong code's failure (one try fewer, its audit event) is committed before the 401."""

    async def test_a_right_code(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        user = await create_user(app)
        async with client_for(app) as client:
            secret, _ = await enable_mfa(client, app, user)
            token = await start_login(client, user)
            async with statements_sent(app, monkeypatch) as queries:
                response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 200, response.text
        assert [_flat(q) for q in queries] == [
            "BEGIN;",
            *(_sql(q) for q in (mfa._CHALLENGE, user_service._LOCKED_USER, mfa._FACTOR, mfa._STEP_FORWARD)),
            *(_sql(q) for q in (mfa._SPEND_CHALLENGE, audit.RECORD)),
            *(_sql(q) for q in (user_service._LOCKED_USER, auth_service._NEW_SESSION)),
            *(_sql(q) for q in (auth_service._END_SESSIONS_OVER_CAP, audit.RECORD)),
            "COMMIT;",
        ]

    async def test_a_wrong_code(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        user = await create_user(app)
        async with client_for(app) as client:
            secret, _ = await enable_mfa(client, app, user)
            token = await start_login(client, user)
            wrong = code_at(secret, steps=5)
            async with statements_sent(app, monkeypatch) as queries:
                response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": wrong})
        assert response.status_code == 401 and response.json()["code"] == "invalid_code"
        assert [_flat(q) for q in queries] == [
            "BEGIN;",
            *(_sql(q) for q in (mfa._CHALLENGE, user_service._LOCKED_USER, mfa._FACTOR)),
            *(_sql(q) for q in (mfa._COUNT_FAILED_ATTEMPT, audit.RECORD)),
            "COMMIT;",
        ]
        assert await actions(app, user.id) == ["mfa.enabled", "mfa.failed"]


class TestDisable:
    async def test_with_code(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        other = await login_aal2(client, app, user, secret)
        await forget_used_codes(app, user.id)
        response = await client.request("DELETE", f"{MFA}/totp", json={"code": code_at(secret)}, headers=user.headers)
        assert response.status_code == 204, response.text
        assert (await client.get(ME, headers=bearer(other))).json()["code"] == "session_revoked"
        me = (await client.get(ME, headers=user.headers)).json()
        assert (me["mfa_enabled"], me["aal"]) == (False, "aal1")
        login = await client.post(LOGIN, json={"email": user.email, "password": user.password})
        assert "access_token" in login.json()
        async with state_of(app).sessionmaker() as session:
            assert await session.get(MfaFactor, user.id) is None
            left = await session.scalar(select(func.count()).select_from(MfaRecoveryCode))
        assert left == 0
        assert (await actions(app, user.id))[-1] == "mfa.disabled"

    async def test_with_recovery_code(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        _, codes = await enable_mfa(client, app, user)
        response = await client.request("DELETE", f"{MFA}/totp", json={"recovery_code": codes[3]}, headers=user.headers)
        assert response.status_code == 204
        assert not await mfa_enabled(client, user)

    async def test_pending_logins_die(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, codes = await enable_mfa(client, app, user)
        token = await start_login(client, user)
        assert (
            await client.request("DELETE", f"{MFA}/totp", json={"recovery_code": codes[0]}, headers=user.headers)
        ).status_code == 204
        response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
        assert response.status_code == 401
        assert response.json()["code"] == "mfa_token_invalid"

    async def test_wrong_code_400_changes_nothing(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        secret, _ = await enable_mfa(client, app, user)
        other = await login_aal2(client, app, user, secret)
        response = await client.request(
            "DELETE", f"{MFA}/totp", json={"recovery_code": "aaaa-bbbb-cccc"}, headers=user.headers
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_code"
        assert await mfa_enabled(client, user)
        assert (await client.get(ME, headers=bearer(other))).status_code == 200
        assert (await actions(app, user.id))[-1] == "mfa.failed"

    async def test_not_enabled_400(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.request("DELETE", f"{MFA}/totp", json={"code": "123456"}, headers=user.headers)
        assert response.status_code == 400
        assert response.json()["code"] == "mfa_not_enabled"


class TestRateLimits:
    async def test_verify_is_limited_per_user_across_ips(self, make_app: AppFactory) -> None:
        application = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_MFA="3/minute", RATE_LIMIT_LOGIN="100/minute")
        user = await create_user(application)
        secret = pyotp.random_base32()
        async with state_of(application).sessionmaker() as session:
            session.add(
                MfaFactor(
                    user_id=user.id,
                    secret_encrypted=totp.encrypt_secret(state_of(application).settings, secret),
                    created_at=utcnow(),
                )
            )
            await session.execute(update(User).where(User.id == user.id).values(mfa_enabled=True))
            await session.commit()
        statuses = []
        for n in range(4):  # four client addresses: the per-IP limit alone would never trip
            async with client_for(application, client_addr=(f"10.0.0.{n + 1}", 5000)) as c:
                token = await start_login(c, user)
                response = await c.post(f"{MFA}/verify", json={"mfa_token": token, "code": "000000"})
                statuses.append(response.status_code)
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3] == 429
        # Forged tokens naming the user never spend the user's quota: they count per IP.
        forged = f"mfa.AAAAAAAAAAAAAAAAAAAAAA.{security._b64(user.id.bytes)}.{'A' * 43}"
        async with client_for(application, client_addr=("10.0.1.1", 5000)) as c:
            answer = await c.post(f"{MFA}/verify", json={"mfa_token": forged, "code": "000000"})
        assert answer.status_code == 401


class TestSupabaseAal:
    @pytest.mark.parametrize("aal", ["aal1", "aal2"])
    async def test_me_shows_the_token_aal(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, aal: str
    ) -> None:
        application = await supabase_app()
        async with client_for(application) as c:
            response = await c.get(ME, headers=bearer(mint(claims(issuer=jwks_server.issuer, aal=aal))))
        assert response.status_code == 200, response.text
        assert response.json()["aal"] == aal
        assert response.json()["mfa_enabled"] is False


class TestAdminRequiresMfa:
    """ADMIN_REQUIRE_MFA=true: every /admin path needs aal2, from either token kind."""

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
    async def test_aal1_superuser_403_on_every_path(
        self, make_app: AppFactory, method: str, path: str, body: dict[str, object] | None
    ) -> None:
        application = await make_app(ADMIN_REQUIRE_MFA=True)
        admin = await create_user(application, is_superuser=True)
        target = await create_user(application)
        async with client_for(application) as c:
            url = "/api/v1/admin" + path.format(user_id=target.id, org_id=uuid.uuid4())
            response = await c.request(method, url, json=body, headers=admin.headers)
        assert response.status_code == 403
        assert response.json()["code"] == "mfa_required"
        assert await load_user(application, target.id) is not None  # nothing happened

    async def test_aal2_superuser_passes(self, make_app: AppFactory) -> None:
        application = await make_app(ADMIN_REQUIRE_MFA=True)
        admin = await create_user(application, is_superuser=True)
        async with client_for(application) as c:
            secret, _ = await enable_mfa(c, application, admin)  # this session is aal2 now
            assert (await c.get("/api/v1/admin/users", headers=admin.headers)).status_code == 200
            fresh = await login_aal2(c, application, admin, secret)
            assert (await c.get("/api/v1/admin/users", headers=bearer(fresh))).status_code == 200

    async def test_off_by_default(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await create_user(app, is_superuser=True)
        assert (await client.get("/api/v1/admin/users", headers=admin.headers)).status_code == 200

    async def test_non_superuser_still_plain_403(self, make_app: AppFactory) -> None:
        application = await make_app(ADMIN_REQUIRE_MFA=True)
        user = await create_user(application)
        async with client_for(application) as c:
            response = await c.get("/api/v1/admin/users", headers=user.headers)
        assert (response.status_code, response.json()["code"]) == (403, "forbidden")

    @pytest.mark.parametrize(("aal", "status"), [("aal1", 403), ("aal2", 200)])
    async def test_supabase_token_aal(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, aal: str, status: int
    ) -> None:
        application = await supabase_app(ADMIN_REQUIRE_MFA=True)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub, aal=aal))
        async with client_for(application) as c:
            assert (await c.get(ME, headers=bearer(token))).status_code == 200  # provisions the user
            async with state_of(application).sessionmaker() as session:
                await session.execute(update(User).where(User.id == sub).values(is_superuser=True))
                await session.commit()
            response = await c.get("/api/v1/admin/users", headers=bearer(token))
        assert response.status_code == status, response.text
        if status == 403:
            assert response.json()["code"] == "mfa_required"
