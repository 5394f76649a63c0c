"""The schema exists only through migrations: they apply once under concurrent starts and match the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import DB_KIND, PG_HOST, PG_PORT, PG_USER, _admin, in_thread, requires_postgres

BACKEND = Path(__file__).resolve().parents[1]


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=BACKEND, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    if DB_KIND != "postgres":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"migr_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        in_thread(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _versions(url: str) -> list[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    finally:
        await engine.dispose()


class TestMigrations:
    def test_upgrade_check_downgrade(self, fresh_url: str) -> None:
        up = alembic(fresh_url, "upgrade", "head")
        assert up.returncode == 0, up.stderr
        check = alembic(fresh_url, "check")
        assert check.returncode == 0, check.stdout + check.stderr  # models and migrations agree
        down = alembic(fresh_url, "downgrade", "base")
        assert down.returncode == 0, down.stderr
        again = alembic(fresh_url, "upgrade", "head")
        assert again.returncode == 0, again.stderr

    @requires_postgres()
    def test_concurrent_upgrades_run_once(self, fresh_url: str) -> None:
        env = {**os.environ, "DATABASE_URL": fresh_url}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "alembic", "upgrade", "head"],
                cwd=BACKEND,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in processes]
        assert all(code == 0 for code, _ in results), results
        ran = sum(err.count("Running upgrade  -> 0001_initial") for _, err in results)
        assert ran == 1, results
        assert len(in_thread(asyncio.run, _versions(fresh_url))) == 1
