from __future__ import annotations

import asyncio
import os

import bcrypt
import httpx
import pytest
from fastapi import FastAPI

from app.auth.passwords import common_passwords, password_problem
from app.core import security
from app.state import state_of
from app.users.models import User
from tests.factories import create_user


class TestPasswordRules:
    def test_bundled_list_is_large(self) -> None:
        assert len(common_passwords()) >= 10_000
        assert "123456" in common_passwords()

    @pytest.mark.parametrize(
        ("password", "ok"),
        [("Sh0rt!", False), ("x" * 129, False), ("iloveyou", False), ("Correct-Horse-Battery-42", True)],
    )
    def test_rules(self, password: str, ok: bool) -> None:
        assert (password_problem(password) is None) is ok

    def test_not_the_email(self) -> None:
        assert password_problem("Alice@Example.com", email="alice@example.com") is not None


@pytest.mark.asyncio
class TestHashing:
    async def test_argon2id(self) -> None:
        hashed = await security.hash_password("Correct-Horse-Battery-42")
        assert hashed.startswith("$argon2id$")
        assert (await security.verify_password("Correct-Horse-Battery-42", hashed))[0] is True
        assert (await security.verify_password("wrong-password", hashed))[0] is False

    async def test_legacy_bcrypt_hash_verifies_and_is_rehashed_on_login(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        user = await create_user(app, logged_in=False)
        legacy = bcrypt.hashpw(b"Legacy-Password-77", bcrypt.gensalt(rounds=4)).decode()
        async with state_of(app).sessionmaker() as session:
            row = await session.get(User, user.id)
            assert row is not None
            row.hashed_password = legacy
            await session.commit()
        response = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "Legacy-Password-77"})
        assert response.status_code == 200, response.text
        async with state_of(app).sessionmaker() as session:
            row = await session.get(User, user.id)
            assert row is not None and row.hashed_password is not None
            assert row.hashed_password.startswith("$argon2id$")
        again = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "Legacy-Password-77"})
        assert again.status_code == 200

    async def test_over_72_bytes_against_bcrypt_is_a_wrong_password(self) -> None:
        legacy = bcrypt.hashpw(b"Legacy-Password-77", bcrypt.gensalt(rounds=4)).decode()
        assert (await security.verify_password("x" * 100, legacy)) == (False, None)

    async def test_logins_do_not_block_the_event_loop(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """While several logins hash, /health/live answers before they finish (hashing runs in threads)."""
        user = await create_user(app, logged_in=False)
        logins = [
            asyncio.create_task(
                client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
            )
            for _ in range(6)
        ]
        await asyncio.sleep(0.02)
        live = await client.get("/health/live")
        assert live.status_code == 200
        pending = sum(not task.done() for task in logins)
        results = await asyncio.gather(*logins)
        assert all(r.status_code == 200 for r in results)
        assert pending > 0, "every login finished before /health/live answered: hashing blocked the loop"


class TestHashConcurrency:
    """At most one hash in flight per CPU the process may use: two 64 MiB hashes sharing a core run slower
    together than one after the other (login throughput, docs/SCALING.md)."""

    def test_counts_the_cpus_of_the_process_affinity(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
        assert security.usable_cpus() == 1
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
        assert security.usable_cpus() == 3

    def test_limiter_is_sized_to_them(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 64)
        monkeypatch.setattr(security, "_hash_limiter", None)
        assert security._limiter().total_tokens == 1
