"""Each token is verified once per process; expiry and the user's state are still checked on every request."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI

from app.core.token_cache import VerifiedTokens
from app.users.models import User
from tests import supabase_tokens
from tests.conftest import client_for
from tests.factories import create_user
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, bearer, claims, mint

jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

ME = "/api/v1/users/me"


class TestCache:
    def test_bounded_oldest_out(self) -> None:
        cache: VerifiedTokens[int] = VerifiedTokens(size=2)
        until = datetime.now(UTC) + timedelta(minutes=1)
        for index, token in enumerate(["a", "b", "c"]):
            cache.add(token, index, until)
        assert cache.get("a") is None
        assert cache.get("b") == (1, until) and cache.get("c") == (2, until)


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("options", {}).get("verify_signature") is not False:
            calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    return calls


@pytest.mark.asyncio
class TestOwnTokens:
    async def test_verified_once_expiry_still_checked(self, app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        user = await create_user(app)
        calls = count_decodes(monkeypatch)
        async with client_for(app) as client:
            for _ in range(3):
                assert (await client.get(ME, headers=user.headers)).status_code == 200
            assert calls.count(user.access_token) == 1
            cache = app.state.verified_tokens
            claims_, _ = cache.get(user.access_token)
            cache.add(user.access_token, claims_, datetime.now(UTC) - timedelta(seconds=1))
            expired = await client.get(ME, headers=user.headers)
            assert expired.status_code == 401 and expired.json()["code"] == "token_expired"


@pytest.mark.asyncio
class TestSupabaseTokens:
    async def test_verified_once_expiry_and_user_still_checked(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app = await supabase_app()
        token = mint(claims(issuer=f"{jwks_server.url}/auth/v1"))
        calls = count_decodes(monkeypatch)
        async with client_for(app) as client:
            first = await client.get(ME, headers=bearer(token))
            assert first.status_code == 200, first.text
            assert (await client.get(ME, headers=bearer(token))).status_code == 200
            assert calls.count(token) == 1

            async with app.state.sessionmaker() as session:  # deactivated: refused at once, cache or not
                user = await session.get(User, uuid.UUID(first.json()["id"]))
                assert user is not None
                user.is_active = False
                await session.commit()
            inactive = await client.get(ME, headers=bearer(token))
            assert inactive.status_code == 401 and inactive.json()["code"] == "inactive_user"

            cache = app.state.supabase_identities
            identity, _ = cache.get(token)
            cache.add(token, identity, datetime.now(UTC) - timedelta(seconds=1))
            expired = await client.get(ME, headers=bearer(token))
            assert expired.status_code == 401 and expired.json()["code"] == "token_expired"

    async def test_refused_tokens_are_not_cached(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        app = await supabase_app()
        token = mint(claims(issuer=f"{jwks_server.url}/auth/v1", role="service_role"))
        async with client_for(app) as client:
            for _ in range(2):
                assert (await client.get(ME, headers=bearer(token))).status_code == 401
        assert app.state.supabase_identities.get(token) is None
