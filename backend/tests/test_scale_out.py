"""Scale-out: several processes on one PostgreSQL keep every guarantee (docs/SCALING.md).

One fresh database, migrated by two concurrent ``alembic upgrade head`` runs (two instances' release steps),
then two real servers on two ports sharing it: ``uvicorn --workers 2`` (port A) and a second instance with one
worker (port B), both with FIRST_SUPERUSER_* set, so three processes race the bootstrap. Requests go to one
port or the other to show that no guarantee depends on which process answers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from app.core import security
from app.state import state_of
from tests.conftest import BACKEND_DIR, PG_HOST, PG_PORT, PG_USER, _admin, in_thread, requires_postgres
from tests.core.uvicorn_server import uvicorn_server

pytestmark = requires_postgres()

SUPERUSER_EMAIL = "root-scale@example.com"
SUPERUSER_PASSWORD = "Scale-out-root-password-41"
USER_PASSWORD = "Scale-out-user-password-77"


@dataclass
class Cluster:
    dsn: str
    a: str  # base URL of the two-worker instance
    b: str  # base URL of the one-worker instance
    migration_runs: list[subprocess.CompletedProcess[str]]


def _query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dsn)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    result: list[asyncpg.Record] = in_thread(asyncio.run, run())
    return result


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    name = f"scale_out_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    dsn = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        env = {**os.environ, "DATABASE_URL": url}
        command = [sys.executable, "-m", "alembic", "upgrade", "head"]
        starts = [
            subprocess.Popen(
                command, cwd=BACKEND_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for _ in range(2)
        ]
        runs = [
            subprocess.CompletedProcess(p.args, p.wait(timeout=60), p.stdout.read() if p.stdout else "") for p in starts
        ]
        for p in starts:
            if p.stdout:
                p.stdout.close()
        bootstrap = {"FIRST_SUPERUSER_EMAIL": SUPERUSER_EMAIL, "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD}
        with uvicorn_server(url, workers=2, **bootstrap) as a, uvicorn_server(url, workers=1, **bootstrap) as b:
            yield Cluster(dsn=dsn, a=a, b=b, migration_runs=runs)
    finally:
        in_thread(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _login(base_url: str, email: str, password: str) -> dict[str, str]:
    response = httpx.post(f"{base_url}/api/v1/auth/login", json={"email": email, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, str] = response.json()
    return data


def _me(base_url: str, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return httpx.get(f"{base_url}/api/v1/users/me", headers=headers, timeout=30).status_code


def _user_without_profile(dsn: str) -> str:
    email = f"scale-{uuid.uuid4().hex[:8]}@example.com"
    now = datetime.now(UTC)
    _query(
        dsn,
        "INSERT INTO users (id, email, hashed_password, full_name, is_active, is_superuser, is_verified, "
        "auth_provider, created_at, updated_at) VALUES ($1, $2, $3, 'Scale', true, false, true, 'local', $4, $4)",
        uuid.uuid4(),
        email,
        security.pwd_context.hash(USER_PASSWORD),
        now,
    )
    return email


class TestMigrations:
    def test_concurrent_upgrades_apply_once(self, cluster: Cluster) -> None:
        assert [run.returncode for run in cluster.migration_runs] == [0, 0], [r.stdout for r in cluster.migration_runs]
        versions = _query(cluster.dsn, "SELECT version_num FROM alembic_version")
        heads = subprocess.run(
            [sys.executable, "-m", "alembic", "heads"], cwd=BACKEND_DIR, capture_output=True, text=True, check=True
        ).stdout.split()[0]
        assert [row["version_num"] for row in versions] == [heads]


class TestBootstrap:
    def test_exactly_one_superuser(self, cluster: Cluster) -> None:
        rows = _query(cluster.dsn, "SELECT email, is_active FROM users WHERE is_superuser")
        assert [(row["email"], row["is_active"]) for row in rows] == [(SUPERUSER_EMAIL, True)]
        profiles = _query(
            cluster.dsn, "SELECT count(*) AS n FROM profiles p JOIN users u ON u.id = p.id WHERE u.is_superuser"
        )
        assert profiles[0]["n"] == 1

    def test_superuser_can_log_in_on_both_instances(self, cluster: Cluster) -> None:
        for base_url in (cluster.a, cluster.b):
            tokens = _login(base_url, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
            assert _me(base_url, tokens["access_token"]) == 200


class TestRevocationAcrossInstances:
    @pytest.mark.parametrize("revoke_on, check_on", [("a", "b"), ("b", "a")])
    def test_logout_refused_by_the_other_instance(self, cluster: Cluster, revoke_on: str, check_on: str) -> None:
        revoker, checker = getattr(cluster, revoke_on), getattr(cluster, check_on)
        token = _login(revoker, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)["access_token"]
        for _ in range(3):  # every process of the checking instance has seen it valid (and could have cached it)
            assert _me(checker, token) == 200
        response = httpx.post(f"{revoker}/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 204
        assert _me(checker, token) == 401
        assert _me(revoker, token) == 401

    def test_session_delete_refused_by_every_worker(self, cluster: Cluster) -> None:
        victim = _login(cluster.a, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        actor = _login(cluster.b, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)["access_token"]
        for base_url in (cluster.a, cluster.a, cluster.b):
            assert _me(base_url, victim["access_token"]) == 200
        response = httpx.delete(
            f"{cluster.b}/api/v1/auth/sessions/{victim['session_id']}",
            headers={"Authorization": f"Bearer {actor}"},
            timeout=30,
        )
        assert response.status_code == 204
        # New connections land on either worker of instance A: each must refuse at once.
        assert [_me(base_url, victim["access_token"]) for base_url in (cluster.a, cluster.a, cluster.a, cluster.b)] == [
            401
        ] * 4


class TestProfileAcrossInstances:
    @pytest.mark.asyncio
    async def test_concurrent_get_or_create_gives_one_profile(self, cluster: Cluster) -> None:
        email = _user_without_profile(cluster.dsn)
        token = _login(cluster.a, email, USER_PASSWORD)["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{base_url}/api/v1/profile", json={"full_name": "Scale"}, headers=headers)
                    for base_url in (cluster.a, cluster.b) * 4
                )
            )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 7 + [201], [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        rows = _query(
            cluster.dsn, "SELECT count(*) AS n FROM profiles p JOIN users u ON u.id = p.id WHERE u.email = $1", email
        )
        assert rows[0]["n"] == 1


class TestIdleConnectionPing:
    """Connections that sat idle are checked (the engine pings them) or closed (the driver pool, app/core/driver.py)
    before a request would see them: one killed while idle is replaced unseen."""

    @pytest.mark.asyncio
    async def test_connection_killed_while_idle_is_replaced(self, make_app, monkeypatch: pytest.MonkeyPatch) -> None:
        from app.core import db
        from tests.conftest import client_for
        from tests.factories import create_user

        monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.3)  # idle after 0.3 s instead of 10 s
        application = await make_app(DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0, DATABASE_DRIVER_POOL_SIZE=1)
        user = await create_user(application)
        async with client_for(application) as client:
            for path in ("/api/v1/users/me", "/api/v1/profile"):  # the driver pool's lookup; the engine's session
                assert (await client.get(path, headers=user.headers)).status_code == 200
            async with state_of(application).engine.connect() as connection:
                engine_pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
            driver = state_of(application).data.driver
            assert driver is not None
            async with driver.connection() as connection:
                driver_pid = await connection.fetchval("SELECT pg_backend_pid()")
            killer = await asyncpg.connect(state_of(application).settings.DATABASE_URL.replace("+asyncpg", ""))
            try:
                for pid in (engine_pid, driver_pid):
                    assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await killer.close()
            await asyncio.sleep(0.8)  # both now count as idle
            for path in ("/api/v1/users/me", "/api/v1/profile"):
                assert (await client.get(path, headers=user.headers)).status_code == 200, path
