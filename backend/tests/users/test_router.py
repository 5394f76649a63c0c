"""/users/me and the profile: GET (404 until created), POST get-or-create, PUT (never credits)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.credits.models import CreditTransaction
from app.state import state_of
from app.users.models import Profile
from tests import supabase_tokens
from tests.conftest import client_for, requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email
from tests.supabase_tokens import EC_KEY, JwksServer, SupabaseAppFactory, bearer, claims, mint

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

PROFILE = "/api/v1/profile"
ME = "/api/v1/users/me"
PROFILE_FIELDS = {"id", "full_name", "avatar_url", "credits", "created_at", "updated_at"}


async def ledger(application: FastAPI, user_id: uuid.UUID) -> list[CreditTransaction]:
    async with state_of(application).sessionmaker() as session:
        rows = await session.scalars(select(CreditTransaction).where(CreditTransaction.user_id == user_id))
        return list(rows)


async def profile_count(application: FastAPI, user_id: uuid.UUID) -> int:
    async with state_of(application).sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Profile).where(Profile.id == user_id)) or 0)


class TestReadMe:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, full_name="Grace Hopper")
        response = await client.get(ME, headers=user.headers)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {
            "id",
            "email",
            "full_name",
            "is_active",
            "is_superuser",
            "is_verified",
            "auth_provider",
            "created_at",
            "mfa_enabled",
            "aal",
        }
        assert body["id"] == str(user.id)
        assert body["email"] == user.email
        assert body["full_name"] == "Grace Hopper"
        assert body["auth_provider"] == "local"
        assert body["created_at"].endswith(("Z", "+00:00"))
        assert body["mfa_enabled"] is False
        assert body["aal"] == "aal1"

    async def test_no_token_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(ME)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


class TestUpdateMe:
    async def test_name(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.patch(ME, headers=user.headers, json={"full_name": "New Name"})
        assert response.status_code == 200
        assert response.json()["full_name"] == "New Name"
        assert (await client.get(ME, headers=user.headers)).json()["full_name"] == "New Name"

    async def test_email_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """The email changes through POST /users/me/email (tests/security/test_identity.py, TestEmailChange)."""
        user = await create_user(app)
        response = await client.patch(ME, headers=user.headers, json={"email": unique_email("moved")})
        assert response.status_code == 422
        assert (await client.get(ME, headers=user.headers)).json()["email"] == user.email

    @pytest.mark.parametrize("field", [{"is_superuser": True}, {"is_verified": True}, {"auth_provider": "x"}])
    async def test_privileged_field_422(self, client: httpx.AsyncClient, app: FastAPI, field: dict[str, Any]) -> None:
        user = await create_user(app)
        response = await client.patch(ME, headers=user.headers, json=field)
        assert response.status_code == 422
        me = (await client.get(ME, headers=user.headers)).json()
        assert me["is_superuser"] is False

    async def test_no_token_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.patch(ME, json={"full_name": "x"})).status_code == 401


class TestGetProfile:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, full_name="Ada")
        response = await client.get(PROFILE, headers=user.headers)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == PROFILE_FIELDS
        assert body["id"] == str(user.id)
        assert body["credits"] == 1000
        assert body["full_name"] == "Ada"
        assert body["avatar_url"] is None

    async def test_not_created_yet_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        response = await client.get(PROFILE, headers=user.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "profile_not_found"

    async def test_no_token_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.get(PROFILE)).status_code == 401


class TestCreateProfile:
    async def test_new_201_with_default_credits_and_ledger(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False, full_name="Account Name")
        response = await client.post(PROFILE, headers=user.headers, json={})
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == PROFILE_FIELDS
        assert body["credits"] == 1000
        assert body["full_name"] == "Account Name"
        rows = await ledger(app, user.id)
        assert [(row.amount, row.balance_after) for row in rows] == [(1000, 1000)]

    async def test_full_name_given(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        response = await client.post(PROFILE, headers=user.headers, json={"full_name": "Chosen"})
        assert response.status_code == 201
        assert response.json()["full_name"] == "Chosen"

    async def test_no_body_201(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        assert (await client.post(PROFILE, headers=user.headers)).status_code == 201

    async def test_existing_200_unchanged(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, full_name="Kept")
        first = (await client.get(PROFILE, headers=user.headers)).json()
        response = await client.post(PROFILE, headers=user.headers, json={"full_name": "Ignored"})
        assert response.status_code == 200
        assert response.json() == first
        assert len(await ledger(app, user.id)) == 1

    async def test_then_get_200(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        created = (await client.post(PROFILE, headers=user.headers, json={})).json()
        response = await client.get(PROFILE, headers=user.headers)
        assert response.status_code == 200
        assert response.json() == created

    async def test_default_credits_setting(self, make_app) -> None:
        application = await make_app(DEFAULT_CREDITS=25)
        user = await create_user(application, profile=False)
        async with client_for(application) as client:
            response = await client.post(PROFILE, headers=user.headers, json={})
        assert response.json()["credits"] == 25
        assert [row.amount for row in await ledger(application, user.id)] == [25]

    @pytest.mark.parametrize("extra", [{"credits": 999999}, {"id": str(uuid.uuid4())}, {"avatar_url": "x"}])
    async def test_unknown_field_422(self, client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]) -> None:
        user = await create_user(app, profile=False)
        response = await client.post(PROFILE, headers=user.headers, json=extra)
        assert response.status_code == 422
        assert await profile_count(app, user.id) == 0

    async def test_no_token_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.post(PROFILE, json={})).status_code == 401

    @requires_postgres()
    async def test_concurrent_calls_create_exactly_one(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        responses = await asyncio.gather(*(client.post(PROFILE, headers=user.headers, json={}) for _ in range(20)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
        assert {r.json()["credits"] for r in responses} == {1000}
        assert await profile_count(app, user.id) == 1
        rows = await ledger(app, user.id)
        assert [(row.amount, row.balance_after) for row in rows] == [(1000, 1000)]

    @requires_postgres()
    async def test_concurrent_calls_on_two_instances(self, client: httpx.AsyncClient, app: FastAPI, make_app) -> None:
        other = await make_app()
        user = await create_user(app, profile=False)
        async with client_for(other) as other_client:
            calls = [c.post(PROFILE, headers=user.headers, json={}) for c in (client, other_client) for _ in range(5)]
            responses = await asyncio.gather(*calls)
        assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
        assert len(await ledger(app, user.id)) == 1


class TestUpdateProfile:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        before = (await client.get(PROFILE, headers=user.headers)).json()
        response = await client.put(
            PROFILE,
            headers=user.headers,
            json={"full_name": "Renamed", "avatar_url": "https://cdn.example.com/a.png"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["full_name"] == "Renamed"
        assert body["avatar_url"] == "https://cdn.example.com/a.png"
        assert body["credits"] == before["credits"]
        assert body["updated_at"] >= before["updated_at"]
        assert (await client.get(PROFILE, headers=user.headers)).json() == body

    async def test_partial_keeps_other_fields(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await client.put(PROFILE, headers=user.headers, json={"avatar_url": "https://example.com/me.jpg"})
        response = await client.put(PROFILE, headers=user.headers, json={"full_name": "Only Name"})
        assert response.json()["avatar_url"] == "https://example.com/me.jpg"

    async def test_clear_avatar(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await client.put(PROFILE, headers=user.headers, json={"avatar_url": "https://example.com/me.jpg"})
        response = await client.put(PROFILE, headers=user.headers, json={"avatar_url": None})
        assert response.json()["avatar_url"] is None

    @pytest.mark.parametrize("extra", [{"credits": 5}, {"credits": 1000000, "full_name": "x"}, {"id": "x"}])
    async def test_credits_never_set_422(self, client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]) -> None:
        user = await create_user(app)
        response = await client.put(PROFILE, headers=user.headers, json=extra)
        assert response.status_code == 422
        profile = (await client.get(PROFILE, headers=user.headers)).json()
        assert profile["credits"] == 1000
        assert profile["full_name"] != "x"

    @pytest.mark.parametrize(
        "avatar",
        ["not a url", "javascript:alert(1)", "ftp://example.com/a.png", "https://example.com/" + "a" * 2100],
        ids=["garbage", "javascript", "ftp", "too-long"],
    )
    async def test_bad_avatar_422(self, client: httpx.AsyncClient, app: FastAPI, avatar: str) -> None:
        user = await create_user(app)
        response = await client.put(PROFILE, headers=user.headers, json={"avatar_url": avatar})
        assert response.status_code == 422

    async def test_name_too_long_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await client.put(PROFILE, headers=user.headers, json={"full_name": "x" * 256})).status_code == 422

    async def test_no_profile_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        response = await client.put(PROFILE, headers=user.headers, json={"full_name": "x"})
        assert response.status_code == 404
        assert response.json()["code"] == "profile_not_found"

    async def test_no_token_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.put(PROFILE, json={"full_name": "x"})).status_code == 401


class TestRegistrationProfile:
    async def test_register_creates_profile_at_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        email = unique_email("reg")
        response = await client.post("/api/v1/auth/register", json={"email": email, "password": DEFAULT_PASSWORD})
        assert response.status_code == 201
        user_id = uuid.UUID(response.json()["id"])
        assert await profile_count(app, user_id) == 1
        assert [row.amount for row in await ledger(app, user_id)] == [1000]
        login = await client.post("/api/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})
        headers = bearer(login.json()["access_token"])
        assert (await client.get(PROFILE, headers=headers)).json()["credits"] == 1000
        assert (await client.post(PROFILE, headers=headers, json={})).status_code == 200


class TestSupabaseProfileFlow:
    """The frontend's sequence: GET /profile -> 404 -> POST /profile -> 201; later sign-ins get 200."""

    async def test_signup_then_signin(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        payload = claims(issuer=jwks_server.issuer, sub=sub, email_verified=True)
        payload["user_metadata"]["full_name"] = "Supa User"
        headers = bearer(mint(payload, EC_KEY))
        async with client_for(application) as client:
            missing = await client.get(PROFILE, headers=headers)
            assert missing.status_code == 404
            assert missing.json()["code"] == "profile_not_found"
            created = await client.post(PROFILE, headers=headers, json={})
            assert created.status_code == 201
            assert created.json()["id"] == str(sub)
            assert created.json()["credits"] == 1000
            assert created.json()["full_name"] == "Supa User"
            later = bearer(mint(claims(issuer=jwks_server.issuer, sub=sub, email=payload["email"])))
            assert (await client.get(PROFILE, headers=later)).json() == created.json()
            assert (await client.post(PROFILE, headers=later, json={})).status_code == 200
        assert len(await ledger(application, sub)) == 1

    @requires_postgres()
    async def test_concurrent_first_posts(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        """A brand-new Supabase user whose first 20 calls are POST /profile at once: one user, one profile."""
        application = await supabase_app()
        sub = uuid.uuid4()
        headers = bearer(mint(claims(issuer=jwks_server.issuer, sub=sub)))
        async with client_for(application) as client:
            responses = await asyncio.gather(*(client.post(PROFILE, headers=headers, json={}) for _ in range(20)))
        assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
        assert await profile_count(application, sub) == 1
        assert len(await ledger(application, sub)) == 1
