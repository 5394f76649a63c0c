"""``python -m app create-superuser`` and ``python -m app cleanup`` (app/cli.py)."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app import cli
from app.auth.models import AuthSession, EmailToken, EmailTokenPurpose, MfaChallenge
from app.core.db import utcnow
from app.core.settings import Settings
from app.state import state_of
from app.users.models import Profile, User
from tests.factories import DEFAULT_PASSWORD, create_user, load_user, unique_email

BACKEND_DIR = Path(__file__).resolve().parents[2]
PASSWORD = "Cli-Superuser-Pass-77"


async def user_by_email(app: FastAPI, email: str) -> User | None:
    async with state_of(app).sessionmaker() as session:
        user: User | None = await session.scalar(select(User).where(User.email == email))
        return user


@pytest.mark.asyncio
class TestCreateSuperuser:
    async def test_creates(self, app: FastAPI, settings: Settings) -> None:
        email = unique_email("cli")
        result = await cli.create_superuser(settings, email=email, password=PASSWORD)
        assert result.created
        user = await user_by_email(app, email)
        assert user is not None and user.is_superuser and user.is_active and user.is_verified
        async with state_of(app).sessionmaker() as session:
            assert await session.get(Profile, user.id) is not None

    async def test_promotes_existing_keeping_password(self, app: FastAPI, settings: Settings) -> None:
        existing = await create_user(app, is_active=False, logged_in=False)
        result = await cli.create_superuser(settings, email=existing.email.upper(), password=PASSWORD)
        assert (result.created, result.promoted) == (False, True)
        user = await load_user(app, existing.id)
        assert user is not None and user.is_superuser and user.is_active
        from app.core import security

        assert user.hashed_password is not None
        assert (await security.verify_password(DEFAULT_PASSWORD, user.hashed_password))[0]

    async def test_twice_is_a_no_op(self, app: FastAPI, settings: Settings) -> None:
        email = unique_email("cli")
        await cli.create_superuser(settings, email=email, password=PASSWORD)
        again = await cli.create_superuser(settings, email=email, password=PASSWORD)
        assert (again.created, again.promoted) == (False, False)

    async def test_subprocess(self, app: FastAPI, database_url: str) -> None:
        email = unique_email("proc")
        env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "test", "LOG_LEVEL": "WARNING"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app",
            "create-superuser",
            "--email",
            email,
            "--password",
            PASSWORD,
            cwd=BACKEND_DIR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, stderr.decode()
        assert f"created superuser {email}" in stdout.decode()
        assert PASSWORD not in stdout.decode() + stderr.decode()
        user = await user_by_email(app, email)
        assert user is not None and user.is_superuser


class TestCommands:
    """main([...]) as the shell calls it (asyncio.run inside, so these tests are synchronous)."""

    def test_weak_password_refused(
        self, app: FastAPI, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", database_url)
        email = unique_email("cli")
        assert cli.main(["create-superuser", "--email", email, "--password", "password"]) == 2
        assert "too common" in capsys.readouterr().err
        assert asyncio.run(_exists(database_url, email)) is False

    def test_prompts_for_password(
        self, app: FastAPI, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", database_url)
        answers = iter(["short", PASSWORD, PASSWORD])  # a refused one, then the password twice
        monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
        email = unique_email("cli")
        assert cli.main(["create-superuser", "--email", email]) == 0
        captured = capsys.readouterr()
        assert "at least 8" in captured.err
        assert f"created superuser {email}" in captured.out
        assert asyncio.run(_exists(database_url, email)) is True

    def test_command_prints_count(
        self, app: FastAPI, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert cli.main(["cleanup", "--batch-size", "50"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("deleted 0 rows (audit events older than 365 days)")
        assert "  old audit events: 0 in 1 batches" in out


async def _exists(database_url: str, email: str) -> bool:
    from app.core.db import create_engine, create_sessionmaker

    settings = Settings(_env_file=None, DATABASE_URL=database_url)
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            return await session.scalar(select(User.id).where(User.email == email)) is not None
    finally:
        await engine.dispose()


@pytest.mark.asyncio
class TestCleanup:
    async def test_deletes_dead_sessions_and_tokens(self, app: FastAPI, settings: Settings) -> None:
        user = await create_user(app)
        old = utcnow() - timedelta(days=3)
        async with state_of(app).sessionmaker() as session:
            expired = AuthSession(user_id=user.id, token_salt="s", created_at=old, last_used_at=old, expires_at=old)
            revoked = AuthSession(
                user_id=user.id,
                token_salt="s",
                created_at=old,
                last_used_at=old,
                expires_at=utcnow() + timedelta(days=3),
                revoked_at=old,
            )
            token = EmailToken(
                user_id=user.id,
                purpose=EmailTokenPurpose.PASSWORD_RESET,
                token_hash="0" * 64,
                email=user.email,
                created_at=old,
                expires_at=old,
            )
            challenges = [
                MfaChallenge(user_id=user.id, created_at=old, expires_at=old),
                MfaChallenge(user_id=user.id, created_at=utcnow(), expires_at=utcnow() + timedelta(minutes=5)),
            ]
            session.add_all([expired, revoked, token, *challenges])
            await session.commit()
        assert (await cli.cleanup(settings)).total == 4
        async with state_of(app).sessionmaker() as session:
            live = list(await session.scalars(select(MfaChallenge.id)))
        assert live == [challenges[1].id]  # only the expired challenge went
        async with state_of(app).sessionmaker() as session:
            remaining = list(await session.scalars(select(AuthSession.id).where(AuthSession.user_id == user.id)))
        assert remaining == [user.session_id]
