from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth import service as auth_service
from app.auth.exceptions import SessionRevokedError
from app.core import security
from app.state import state_of
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email

pytestmark = pytest.mark.asyncio


async def login(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **extra: str
) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestRegister:
    async def test_ok_creates_user_and_profile(self, client: httpx.AsyncClient) -> None:
        email = unique_email()
        response = await client.post(
            "/api/v1/auth/register", json={"email": f"  {email.upper()} ", "password": DEFAULT_PASSWORD}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["email"] == email
        assert body["is_verified"] is False
        assert body["auth_provider"] == "local"
        assert "access_token" not in body and "hashed_password" not in body
        tokens = await login(client, email)
        profile = await client.get("/api/v1/profile", headers=bearer(tokens["access_token"]))
        assert profile.status_code == 200
        assert profile.json()["credits"] == 1000

    async def test_duplicate_email_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(
            "/api/v1/auth/register", json={"email": user.email.upper(), "password": DEFAULT_PASSWORD}
        )
        assert response.status_code == 409
        assert response.json()["code"] == "email_taken"

    @pytest.mark.parametrize(
        "password",
        ["short1!", "x" * 129, "password123", "qwertyuiop"],
        ids=["too-short", "too-long", "common", "common-2"],
    )
    async def test_weak_password_422(self, client: httpx.AsyncClient, password: str) -> None:
        response = await client.post("/api/v1/auth/register", json={"email": unique_email(), "password": password})
        assert response.status_code == 422
        assert password not in response.text

    async def test_password_equal_to_email_422(self, client: httpx.AsyncClient) -> None:
        email = unique_email()
        response = await client.post("/api/v1/auth/register", json={"email": email, "password": email})
        assert response.status_code == 422

    @pytest.mark.parametrize(
        ("password", "message"),
        [
            ("password123", "This password is too common."),
            ("          ", "Password must contain at least one character that is not a space."),
            ("short", "String should have at least 8 characters"),
            (None, "Password must not be the same as the email."),
        ],
        ids=["common", "spaces", "short", "the-email"],
    )
    async def test_password_errors_point_at_the_field(
        self, client: httpx.AsyncClient, password: str | None, message: str
    ) -> None:
        """A form can show the error under the password field: loc names it, the message is plain."""
        email = unique_email()
        response = await client.post("/api/v1/auth/register", json={"email": email, "password": password or email})
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation_error"
        assert [(error["loc"], error["msg"]) for error in body["detail"]] == [(["body", "password"], message)]

    async def test_unknown_field_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": unique_email(), "password": DEFAULT_PASSWORD, "is_superuser": True},
        )
        assert response.status_code == 422


class TestLogin:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        body = await login(client, user.email.upper(), device_name="laptop")
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        me = await client.get("/api/v1/users/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
        assert me.json()["email"] == user.email

    async def test_wrong_password_and_unknown_email_same_answer(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        wrong = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "Wrong-Password-1"})
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": unique_email(), "password": "Wrong-Password-1"}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert (
            wrong.json() == unknown.json() == {"detail": "Incorrect email or password.", "code": "invalid_credentials"}
        )
        assert wrong.headers["www-authenticate"] == "Bearer"

    async def test_unknown_email_costs_what_a_wrong_password_costs(
        self, client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Exactly one password verification on either path, against hashes of the same algorithm and cost, so
        the time does not tell an unknown email from a wrong password (the times: bench/bench_timing.py)."""
        user = await create_user(app, logged_in=False)
        verified: list[str] = []
        real = security._verify_and_update

        def counted(password: str, hashed: str) -> tuple[bool, str | None]:
            verified.append(hashed)
            return real(password, hashed)

        monkeypatch.setattr(security, "_verify_and_update", counted)
        costs: list[str] = []
        for email in (user.email, unique_email(), user.email, unique_email()):
            verified.clear()
            response = await client.post("/api/v1/auth/login", json={"email": email, "password": "Wrong-Password-1"})
            assert response.status_code == 401
            (hashed,) = verified  # one verification, never zero (unknown) nor two
            costs.append(hashed.rsplit("$", 2)[0])  # e.g. $argon2id$v=19$m=65536,t=2,p=1
        assert len(set(costs)) == 1 and costs[0].startswith("$argon2id$"), costs

    async def test_inactive_user_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, is_active=False, logged_in=False)
        response = await client.post("/api/v1/auth/login", json={"email": user.email, "password": DEFAULT_PASSWORD})
        assert response.status_code == 401
        assert response.json()["code"] == "inactive_user"

    async def test_oauth2_token_form(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, logged_in=False)
        form = {"grant_type": "password", "username": user.email, "password": DEFAULT_PASSWORD}
        response = await client.post("/api/v1/auth/token", data=form)
        assert response.status_code == 200, response.text
        assert response.json()["access_token"]
        bad = await client.post("/api/v1/auth/token", data={**form, "password": "nope-nope-1"})
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_grant"


class TestRefresh:
    async def test_rotation(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert first.status_code == 200, first.text
        new = first.json()
        assert new["refresh_token"] != user.refresh_token
        assert new["session_id"] == str(user.session_id)
        me = await client.get("/api/v1/users/me", headers=bearer(new["access_token"]))
        assert me.status_code == 200

    async def test_reuse_after_grace_ends_session(self, make_app: AppFactory) -> None:
        app = await make_app(REFRESH_REUSE_GRACE_SECONDS=0)
        user = await create_user(app)
        async with client_for(app) as client:
            rotated = (await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})).json()
            await asyncio.sleep(0.01)
            reused = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
            assert reused.status_code == 401
            assert reused.json()["code"] == "refresh_token_reused"
            # the whole session ended: the newest refresh token and the access tokens too
            newest = await client.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
            assert newest.status_code == 401
            me = await client.get("/api/v1/users/me", headers=bearer(rotated["access_token"]))
            assert me.status_code == 401

    async def test_reuse_within_grace_returns_same_token(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = (await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})).json()
        again = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert again.status_code == 200
        assert again.json()["refresh_token"] == first["refresh_token"]
        later = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert later.status_code == 200

    @requires_postgres()
    async def test_concurrent_refreshes_never_diverge(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        answers = await asyncio.gather(
            *[client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}) for _ in range(8)]
        )
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert len({a.json()["refresh_token"] for a in answers}) == 1
        follow = await client.post("/api/v1/auth/refresh", json={"refresh_token": answers[0].json()["refresh_token"]})
        assert follow.status_code == 200

    @requires_postgres()
    @pytest.mark.parametrize("first_step", ["refresh", "logout"])
    async def test_a_refresh_overtaken_between_its_read_and_its_rotation(self, app: FastAPI, first_step: str) -> None:
        """The interleaving parallel requests rarely hit: the racer has read the session when another transaction
        rotates it (the racer gets that rotation's refresh token back) or ends it (401 session_revoked)."""
        user = await create_user(app)
        settings, data = state_of(app).settings, state_of(app).data
        async with data.transaction() as first, data.transaction() as second:
            if first_step == "refresh":
                winner = await auth_service.refresh(first, settings, token=user.refresh_token)
            else:
                await auth_service.logout_with_refresh_token(first, settings, token=user.refresh_token)
            racer = asyncio.create_task(auth_service.refresh(second, settings, token=user.refresh_token))
            await asyncio.sleep(0.3)  # the racer has read the session and waits for its row in the UPDATE
            assert not racer.done()
            await first.commit()
            if first_step == "refresh":
                assert (await racer).refresh_token == winner.refresh_token
            else:
                with pytest.raises(SessionRevokedError):
                    await racer

    @pytest.mark.parametrize("token", ["", "garbage", "rt.AAAA.0.BBBB", "rt." + "A" * 22 + ".0." + "B" * 43])
    async def test_invalid_token_401(self, client: httpx.AsyncClient, token: str) -> None:
        response = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_refresh_token"

    async def test_access_token_is_not_a_refresh_token(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.access_token})
        assert response.status_code == 401
        me = await client.get("/api/v1/users/me", headers=bearer(user.refresh_token))
        assert me.status_code == 401


class TestLogoutAndSessions:
    async def test_logout_revokes_immediately(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await client.post("/api/v1/auth/logout", headers=user.headers)).status_code == 204
        me = await client.get("/api/v1/users/me", headers=user.headers)
        assert me.status_code == 401
        assert me.json()["code"] == "session_revoked"
        refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert refresh.status_code == 401

    async def test_revocation_seen_by_second_instance(self, app: FastAPI, make_app: AppFactory) -> None:
        user = await create_user(app)
        other = await make_app()
        async with client_for(app) as one, client_for(other) as two:
            assert (await two.get("/api/v1/users/me", headers=user.headers)).status_code == 200
            assert (await one.post("/api/v1/auth/logout-all", headers=user.headers)).status_code == 204
            assert (await two.get("/api/v1/users/me", headers=user.headers)).status_code == 401

    async def test_list_and_delete_sessions(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        second = await login(client, user.email, device_name="phone")
        listed = await client.get("/api/v1/auth/sessions", headers={**user.headers, "User-Agent": "pytest-agent"})
        assert listed.status_code == 200
        page = listed.json()
        assert (page["total"], page["limit"], page["offset"]) == (2, 20, 0)
        sessions = page["items"]
        assert len(sessions) == 2
        assert [s["id"] for s in sessions] == [second["session_id"], str(user.session_id)]  # newest first
        current = [s for s in sessions if s["current"]]
        assert len(current) == 1 and current[0]["id"] == str(user.session_id)
        phone = next(s for s in sessions if s["device_name"] == "phone")
        assert phone["ip_address"] == "127.0.0.1"
        deleted = await client.delete(f"/api/v1/auth/sessions/{phone['id']}", headers=user.headers)
        assert deleted.status_code == 204
        assert (await client.get("/api/v1/users/me", headers=bearer(second["access_token"]))).status_code == 401
        again = await client.delete(f"/api/v1/auth/sessions/{phone['id']}", headers=user.headers)
        assert again.status_code == 404

    async def test_delete_someone_elses_session_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        alice = await create_user(app)
        bob = await create_user(app)
        response = await client.delete(f"/api/v1/auth/sessions/{bob.session_id}", headers=alice.headers)
        assert response.status_code == 404
        assert (await client.get("/api/v1/users/me", headers=bob.headers)).status_code == 200


class TestPasswordChange:
    async def test_new_password_equal_to_email_points_at_the_field(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        """A rule only the service can check answers in the same 422 shape, under the field."""
        user = await create_user(app)
        response = await client.post(
            "/api/v1/auth/password",
            headers=user.headers,
            json={"current_password": DEFAULT_PASSWORD, "new_password": user.email},
        )
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {
                    "type": "password_policy",
                    "loc": ["body", "new_password"],
                    "msg": "Password must not be the same as the email.",
                }
            ],
            "code": "validation_error",
        }

    async def test_ok_ends_other_sessions(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        other = await login(client, user.email)
        new_password = "Another-Strong-Pass-9"
        response = await client.post(
            "/api/v1/auth/password",
            headers=user.headers,
            json={"current_password": DEFAULT_PASSWORD, "new_password": new_password},
        )
        assert response.status_code == 204, response.text
        assert (await client.get("/api/v1/users/me", headers=user.headers)).status_code == 200
        assert (await client.get("/api/v1/users/me", headers=bearer(other["access_token"]))).status_code == 401
        await login(client, user.email, new_password)

    async def test_wrong_current_password_400(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(
            "/api/v1/auth/password",
            headers=user.headers,
            json={"current_password": "Not-The-Password-1", "new_password": "Another-Strong-Pass-9"},
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_password"


class TestAccessTokens:
    async def test_missing_token_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "not_authenticated"

    async def test_foreign_secret_401(self, client: httpx.AsyncClient, app: FastAPI, make_app: AppFactory) -> None:
        other = await make_app(SECRET_KEY="another-deployment-secret-key-0123456789")
        user = await create_user(other)
        response = await client.get("/api/v1/users/me", headers=user.headers)
        assert response.status_code == 401

    async def test_deactivated_user_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        async with state_of(app).sessionmaker() as session:
            from app.users.models import User

            row = await session.get(User, user.id)
            assert row is not None
            row.is_active = False
            await session.commit()
        response = await client.get("/api/v1/users/me", headers=user.headers)
        assert response.status_code == 401
        assert response.json()["code"] == "inactive_user"
