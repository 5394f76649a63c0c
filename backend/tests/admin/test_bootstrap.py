"""The first superuser (FIRST_SUPERUSER_EMAIL / FIRST_SUPERUSER_PASSWORD), made on start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.admin.bootstrap import BootstrapError, SuperuserResult, bootstrap_first_superuser, ensure_superuser
from app.audit.models import AuditEvent
from app.core import security
from app.core.data import Data
from app.core.db import create_engine
from app.core.driver import Driver
from app.core.settings import Settings
from app.state import state_of
from app.users.models import Profile, User
from tests import factories
from tests.conftest import AppFactory, client_for, make_settings, requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email

pytestmark = pytest.mark.asyncio

FIRST_PASSWORD = "First-Superuser-Pass-1"


@asynccontextmanager
async def data_of(settings: Settings) -> AsyncIterator[Data]:
    """What a starting worker has: its own engine and asyncpg pool (PostgreSQL)."""
    engine = create_engine(settings)
    driver = await Driver.create(engine, settings)
    try:
        yield Data(engine, driver)
    finally:
        if driver is not None:
            await driver.close()
        await engine.dispose()


async def ensure(app: FastAPI, email: str) -> SuperuserResult:
    async with state_of(app).data.transaction() as tx:
        return await ensure_superuser(tx, email=email, password=FIRST_PASSWORD, credits=0, actor="bootstrap")


def first(email: str, password: str = FIRST_PASSWORD) -> dict[str, Any]:
    return {"FIRST_SUPERUSER_EMAIL": email, "FIRST_SUPERUSER_PASSWORD": password}


async def users_with_email(app: FastAPI, email: str) -> list[User]:
    async with state_of(app).sessionmaker() as session:
        return list(await session.scalars(select(User).where(User.email == email)))


async def get_me(app: FastAPI, user: factories.TestUser) -> httpx.Response:
    async with client_for(app) as client:
        return await client.get("/api/v1/users/me", headers=user.headers)


async def login_status(app: FastAPI, email: str, password: str) -> int:
    async with client_for(app) as client:
        response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
        return response.status_code


class TestBootstrapOnStart:
    async def test_creates_active_verified_superuser_with_profile(self, app: FastAPI, make_app: AppFactory) -> None:
        email = unique_email("root")
        await make_app(**first(email.upper()))
        [user] = await users_with_email(app, email)
        assert (user.is_superuser, user.is_active, user.is_verified) == (True, True, True)
        assert user.hashed_password is not None and FIRST_PASSWORD not in user.hashed_password
        async with state_of(app).sessionmaker() as session:
            profile = await session.get(Profile, user.id)
        assert profile is not None and profile.credits == 1000
        assert await login_status(app, email, FIRST_PASSWORD) == 200

    async def test_promotes_and_reactivates_existing_user(self, app: FastAPI, make_app: AppFactory) -> None:
        existing = await create_user(app, is_active=False, logged_in=False)
        await make_app(**first(existing.email))
        [user] = await users_with_email(app, existing.email)
        assert user.is_superuser and user.is_active

    async def test_existing_password_is_kept(self, app: FastAPI, make_app: AppFactory) -> None:
        existing = await create_user(app, logged_in=False)
        await make_app(**first(existing.email))
        assert await login_status(app, existing.email, DEFAULT_PASSWORD) == 200
        assert await login_status(app, existing.email, FIRST_PASSWORD) == 401

    async def test_later_start_does_not_overwrite_password(self, app: FastAPI, make_app: AppFactory) -> None:
        email = unique_email("root")
        await make_app(**first(email))
        await make_app(**first(email, "Another-Password-Entirely-9"))
        assert len(await users_with_email(app, email)) == 1
        assert await login_status(app, email, FIRST_PASSWORD) == 200

    async def test_idempotent_one_creation_event(self, app: FastAPI, make_app: AppFactory) -> None:
        email = unique_email("root")
        for _ in range(3):
            await make_app(**first(email))
        [user] = await users_with_email(app, email)
        async with state_of(app).sessionmaker() as session:
            actions = list(
                await session.scalars(select(AuditEvent.action).where(AuditEvent.subject_user_id == user.id))
            )
        assert sorted(actions) == ["admin.superuser_created", "credits.granted"]  # and its profile's credits

    async def test_unset_does_nothing(self, app: FastAPI, make_app: AppFactory) -> None:
        async with state_of(app).sessionmaker() as session:
            before = await session.scalar(select(func.count()).select_from(User))
        await make_app(FIRST_SUPERUSER_EMAIL=unique_email("root"))  # no password: skipped
        async with state_of(app).sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == before

    @requires_postgres()
    async def test_concurrent_bootstraps_make_exactly_one_user(
        self, app: FastAPI, base_settings: dict[str, Any]
    ) -> None:
        email = unique_email("root")
        settings = make_settings(base_settings, **first(email))
        async with AsyncExitStack() as stack:
            starters = [await stack.enter_async_context(data_of(settings)) for _ in range(5)]
            results = await asyncio.gather(*(bootstrap_first_superuser(data, settings) for data in starters))
        assert sum(1 for result in results if result and result.created) == 1
        [user] = await users_with_email(app, email)
        assert user.is_superuser

    @requires_postgres()
    async def test_a_registration_between_the_read_and_the_insert_is_promoted(
        self, app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The advisory lock only orders starters: a sign-up may insert the address meanwhile. The insert then
        inserts nothing (ON CONFLICT DO NOTHING) and the account is taken over as an unverified one."""
        email = unique_email("root")
        hash_password = security.hash_password
        registered: list[factories.TestUser] = []

        async def registering_meanwhile(password: str) -> str:
            if not registered:  # hashing runs between the bootstrap's read and its insert
                monkeypatch.setattr(security, "hash_password", hash_password)
                registered.append(await create_user(app, email=email, is_verified=False))
            return await hash_password(password)

        monkeypatch.setattr(security, "hash_password", registering_meanwhile)
        result = await ensure(app, email)
        assert (result.created, result.promoted, result.user.id) == (False, True, registered[0].id)
        assert (await get_me(app, registered[0])).status_code == 401  # its sessions ended
        [user] = await users_with_email(app, email)
        assert (user.is_superuser, user.is_verified) == (True, True)
        assert await login_status(app, email, FIRST_PASSWORD) == 200

    @requires_postgres()
    async def test_two_app_instances_starting_together(self, app: FastAPI, make_app: AppFactory) -> None:
        email = unique_email("root")
        instances = await asyncio.gather(make_app(**first(email)), make_app(**first(email)))
        assert len(instances) == 2
        assert len(await users_with_email(app, email)) == 1
        async with client_for(instances[1]) as client:
            login = await client.post("/api/v1/auth/login", json={"email": email, "password": FIRST_PASSWORD})
            assert login.status_code == 200
            me = await client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
            )
        assert me.json()["is_superuser"] is True


class TestBootstrapFailure:
    async def test_unreachable_database_logs_and_refuses_to_start(
        self, base_settings: dict[str, Any], caplog: pytest.LogCaptureFixture, tmp_path: Any
    ) -> None:
        settings = make_settings(
            base_settings,
            **first(unique_email("root")),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite",
        )
        async with data_of(settings) as data:
            with caplog.at_level(logging.ERROR, logger="app.admin.bootstrap"), pytest.raises(BootstrapError):
                await bootstrap_first_superuser(data, settings)
        assert any("first superuser bootstrap FAILED" in record.getMessage() for record in caplog.records)

    async def test_app_start_fails_loudly(self, make_app: AppFactory, tmp_path: Any) -> None:
        with pytest.raises(BootstrapError):
            await make_app(
                **first(unique_email("root")), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite"
            )

    async def test_weak_password_refused_in_production(
        self, base_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = make_settings(base_settings, ENVIRONMENT="production", **first(unique_email("root"), "password"))
        async with data_of(settings) as data:
            with pytest.raises(BootstrapError, match="too common"):
                await bootstrap_first_superuser(data, settings)

    async def test_weak_password_only_warned_outside_production(
        self, app: FastAPI, make_app: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        email = unique_email("root")
        with caplog.at_level(logging.WARNING, logger="app.admin.bootstrap"):
            await make_app(**first(email, "password"))
        assert len(await users_with_email(app, email)) == 1
        assert any("weak" in record.getMessage() for record in caplog.records)
        assert all(record.getMessage() != "password" for record in caplog.records)
