"""Each token is verified once per process; expiry and the user's state are still checked on every request."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI

from app.auth.tokens import TokenCache, Verified
from app.core.settings import Settings
from app.state import state_of
from app.users.models import User
from tests import supabase_tokens
from tests.conftest import client_for
from tests.factories import create_user
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, bearer, claims, mint

jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

ME = "/api/v1/users/me"


def expire(cache: TokenCache, token: str) -> None:
    verified = cache.get(token)
    assert verified is not None
    cache.add(token, replace(verified, valid_until=datetime.now(UTC) - timedelta(seconds=1)))


class TestCache:
    def test_bounded_oldest_out(self, settings: Settings) -> None:
        cache = TokenCache(settings, size=2)
        until = datetime.now(UTC) + timedelta(minutes=1)
        entries = [Verified(own=None, supabase=None, valid_until=until + timedelta(seconds=i)) for i in range(3)]
        for token, verified in zip(["a", "b", "c"], entries, strict=True):
            cache.add(token, verified)
        assert cache.get("a") is None
        assert cache.get("b") == entries[1] and cache.get("c") == entries[2]


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
            expire(state_of(app).tokens, user.access_token)
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

            async with state_of(app).sessionmaker() as session:  # deactivated: refused at once, cache or not
                user = await session.get(User, uuid.UUID(first.json()["id"]))
                assert user is not None
                user.is_active = False
                await session.commit()
            inactive = await client.get(ME, headers=bearer(token))
            assert inactive.status_code == 401 and inactive.json()["code"] == "inactive_user"

            expire(state_of(app).tokens, token)
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
        assert state_of(app).tokens.get(token) is None
