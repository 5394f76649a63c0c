"""Faults: the database goes away (between and during requests), a worker is killed mid-request, Supabase's
JWKS endpoint is down. The service answers cleanly, recovers without a restart, and loses or half-writes nothing.

Covered elsewhere, not repeated here:
- reads during a database outage and recovery: tests/health/test_recovery.py;
- Redis down at start, and Redis lost then back mid-run (rate limits fail open with a logged warning, then count
  again): tests/core/test_rate_limit.py::TestRedisStorage;
- the JWKS endpoint down, broken or flapping (Supabase tokens 503 ``jwks_unavailable``, no hammering, recovery,
  HS256 Supabase tokens unaffected): tests/auth/test_supabase.py::TestJwksOutage (this file adds own tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.state import state_of
from app.users.service import SIGNUP_CREDITS_REASON
from tests.conftest import PG_HOST, PG_PORT, AppFactory, client_for, requires_postgres
from tests.core.uvicorn_server import free_port, uvicorn_server
from tests.factories import DEFAULT_PASSWORD, create_user
from tests.health import test_recovery
from tests.proxy import TcpProxy
from tests.supabase_tokens import EC_KEY, claims, mint

pytestmark = pytest.mark.asyncio

proxy = test_recovery.proxy  # the `proxy` fixture: PostgreSQL behind a TcpProxy that a test can stop and start

API = "/api/v1"


async def proxied_app(app: FastAPI, make_app: AppFactory, proxy: TcpProxy) -> FastAPI:
    url = state_of(app).settings.DATABASE_URL.replace(f"@{PG_HOST}:{PG_PORT}/", f"@127.0.0.1:{proxy.port}/")
    return await make_app(DATABASE_URL=url, DATABASE_CONNECT_TIMEOUT=2, DATABASE_POOL_TIMEOUT=2)


async def rows(app: FastAPI, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with state_of(app).engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(sql), params)]


async def ledger_problems(app: FastAPI) -> list[tuple[object, ...]]:
    """Profiles whose balance is not the sum of their ledger, or that lack their signup row, or are negative."""
    return await rows(
        app,
        "SELECT p.id, p.credits, COALESCE(SUM(t.amount), 0), "
        f"COUNT(t.id) FILTER (WHERE t.reason = '{SIGNUP_CREDITS_REASON}') "
        "FROM profiles p LEFT JOIN credit_transactions t ON t.user_id = p.id GROUP BY p.id, p.credits "
        f"HAVING p.credits <> COALESCE(SUM(t.amount), 0) OR p.credits < 0 "
        f"OR COUNT(t.id) FILTER (WHERE t.reason = '{SIGNUP_CREDITS_REASON}') <> 1",
    )


async def unexplained_spends(app: FastAPI) -> list[tuple[object, ...]]:
    """Ledger changes without their audit event, or credit audit events whose ledger row is missing."""
    return await rows(
        app,
        "SELECT t.id FROM credit_transactions t WHERE t.reason <> :signup AND NOT EXISTS (SELECT 1 FROM audit_events a "
        "WHERE a.action LIKE 'credits.%' AND a.details ->> 'transaction_id' = t.id::text) "
        "UNION ALL SELECT a.id FROM audit_events a WHERE a.action LIKE 'credits.%' AND NOT EXISTS "
        "(SELECT 1 FROM credit_transactions t WHERE t.id::text = a.details ->> 'transaction_id')",
        signup=SIGNUP_CREDITS_REASON,
    )


@requires_postgres()
class TestDatabaseOutage:
    async def test_writes_503_write_nothing_then_recover(
        self, app: FastAPI, make_app: AppFactory, proxy: TcpProxy
    ) -> None:
        proxied = await proxied_app(app, make_app, proxy)
        user = await create_user(app)
        async with client_for(proxied) as client:
            assert (await client.get(f"{API}/credits", headers=user.headers)).status_code == 200

            await proxy.stop()
            writes = [
                await client.post(f"{API}/credits/spend", json={"amount": 10, "reason": "x"}, headers=user.headers),
                await client.post(f"{API}/organizations", json={"name": "Down Inc"}, headers=user.headers),
                await client.put(f"{API}/profile", json={"full_name": "Changed"}, headers=user.headers),
                await client.post(
                    f"{API}/auth/register", json={"email": "new@example.com", "password": DEFAULT_PASSWORD}
                ),
            ]
            for response in writes:
                assert response.status_code == 503, response.text
                assert response.json() == {
                    "detail": "The database is unavailable; try again shortly.",
                    "code": "database_unavailable",
                }
                assert response.headers["retry-after"] == "5"

            await proxy.start()
            balance = await client.get(f"{API}/credits", headers=user.headers)
            assert balance.status_code == 200 and balance.json()["balance"] == 1000
            assert await rows(app, "SELECT count(*) FROM organizations") == [(0,)]
            assert await rows(app, "SELECT count(*) FROM users WHERE email = 'new@example.com'") == [(0,)]
            assert await rows(app, "SELECT full_name FROM profiles WHERE id = :id", id=user.id) == [("Test User",)]

            spent = await client.post(f"{API}/credits/spend", json={"amount": 10, "reason": "x"}, headers=user.headers)
            assert spent.status_code == 200 and spent.json()["balance"] == 990
        assert await ledger_problems(app) == []

    async def test_connection_cut_mid_flight(self, app: FastAPI, make_app: AppFactory, proxy: TcpProxy) -> None:
        """The database vanishes while spends stream in: each answer is a 200 or a clean 503, every 200 is in
        the ledger, and every balance is still the sum of its ledger (and of its audit trail)."""
        proxied = await proxied_app(app, make_app, proxy)
        users = [await create_user(app) for _ in range(4)]
        answers: list[httpx.Response] = []
        done = asyncio.Event()
        async with client_for(proxied) as client:

            async def spender(n: int) -> None:
                index = 0
                while not done.is_set():
                    index += 1
                    answers.append(
                        await client.post(
                            f"{API}/credits/spend",
                            json={"amount": 1, "reason": f"cut {n}-{index}"},
                            headers=users[n % len(users)].headers,
                        )
                    )

            async def cutter() -> None:
                while sum(a.status_code == 200 for a in answers) < 20:
                    await asyncio.sleep(0.005)
                await proxy.stop()  # with spends in flight
                while sum(a.status_code == 503 for a in answers) < 10:
                    await asyncio.sleep(0.005)
                done.set()

            await asyncio.wait_for(asyncio.gather(cutter(), *(spender(n) for n in range(8))), timeout=120)
            await proxy.start()
            assert (await client.get("/health")).status_code == 200

        assert {a.status_code for a in answers} == {200, 503}, [a.text for a in answers if a.status_code != 200][:3]
        assert all(a.json()["code"] == "database_unavailable" for a in answers if a.status_code == 503)
        confirmed = {a.json()["transaction"]["id"] for a in answers if a.status_code == 200}
        stored = {str(r[0]) for r in await rows(app, "SELECT id FROM credit_transactions WHERE reason LIKE 'cut %'")}
        assert confirmed <= stored  # an acknowledged spend is never lost
        assert await ledger_problems(app) == []
        assert await unexplained_spends(app) == []


@dataclass
class Stream:
    """What the clients were told: acknowledged spends and registrations, and requests cut off."""

    spends: set[str] = field(default_factory=set)
    registered: set[str] = field(default_factory=set)
    refused: int = 0
    cut: int = 0


def _uvicorn_pids(port: int) -> tuple[int, list[int]]:
    """The uvicorn supervisor listening on ``port`` and its worker processes (Linux /proc)."""
    supervisor = None
    parents: dict[int, int] = {}
    spawned: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"uvicorn" in cmdline[:3] and str(port).encode() in cmdline:
                supervisor = int(entry.name)
            if any(b"spawn_main" in part for part in cmdline):  # not multiprocessing's resource tracker
                spawned.add(int(entry.name))
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    assert supervisor is not None, f"no uvicorn on port {port}"
    return supervisor, [pid for pid, parent in parents.items() if parent == supervisor and pid in spawned]


@requires_postgres()
class TestWorkerKilled:
    async def test_sigkill_mid_request_loses_and_half_writes_nothing(self, app: FastAPI, database_url: str) -> None:
        users = [await create_user(app) for _ in range(6)]
        stream = Stream()
        with uvicorn_server(database_url, workers=2) as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            supervisor, workers = _uvicorn_pids(port)
            assert len(workers) == 2
            limits = httpx.Limits(max_connections=24, max_keepalive_connections=0)  # new connections: both workers
            async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

                async def spend(index: int) -> None:
                    user = users[index % len(users)]
                    try:
                        answer = await client.post(
                            f"{API}/credits/spend", json={"amount": 3, "reason": f"kill {index}"}, headers=user.headers
                        )
                    except httpx.TransportError:
                        stream.cut += 1
                        return
                    if answer.status_code == 200:
                        stream.spends.add(answer.json()["transaction"]["id"])
                    else:
                        stream.refused += 1
                        assert answer.status_code == 402, answer.text

                async def register(index: int) -> None:
                    email = f"kill-{index}-{uuid.uuid4().hex[:6]}@example.com"
                    try:
                        answer = await client.post(
                            f"{API}/auth/register", json={"email": email, "password": DEFAULT_PASSWORD}
                        )
                    except httpx.TransportError:
                        stream.cut += 1
                        return
                    assert answer.status_code == 201, answer.text
                    stream.registered.add(email)

                killed = asyncio.Event()
                stop = asyncio.Event()

                async def load() -> None:
                    index = 0
                    while not stop.is_set():
                        batch = [spend(index + i) for i in range(10)] + [register(index), register(index + 1)]
                        await asyncio.gather(*batch)
                        index += 12

                async def kill_a_worker() -> None:
                    while len(stream.spends) < 20:
                        await asyncio.sleep(0.01)
                    os.kill(workers[0], signal.SIGKILL)  # with requests in flight
                    before = len(stream.spends)
                    killed.set()
                    while len(stream.spends) < before + 20:  # and the service goes on serving
                        await asyncio.sleep(0.01)
                    stop.set()

                await asyncio.wait_for(asyncio.gather(load(), load(), kill_a_worker()), timeout=120)
                assert killed.is_set()
                # The supervisor replaces the dead worker; the service never stopped answering.
                deadline = time.monotonic() + 30
                while len(_uvicorn_pids(port)[1]) < 2 or workers[0] in _uvicorn_pids(port)[1]:
                    assert time.monotonic() < deadline, "the killed worker was not replaced"
                    await asyncio.sleep(0.2)
                after = await client.get(f"{API}/credits", headers=users[0].headers)
                assert after.status_code == 200
            assert supervisor == _uvicorn_pids(port)[0]

        assert stream.spends and stream.registered  # the load ran on both sides of the kill
        stored = {str(r[0]) for r in await rows(app, "SELECT id FROM credit_transactions WHERE reason LIKE 'kill %'")}
        assert stream.spends <= stored  # nothing acknowledged was lost
        emails = {str(r[0]) for r in await rows(app, "SELECT email FROM users WHERE email LIKE 'kill-%'")}
        assert stream.registered <= emails
        # No half-written registration: every user has a profile (with its signup ledger row, checked below).
        assert (
            await rows(app, "SELECT u.email FROM users u LEFT JOIN profiles p ON p.id = u.id WHERE p.id IS NULL") == []
        )
        assert await ledger_problems(app) == []
        assert await unexplained_spends(app) == []


class TestJwksDown:
    async def test_own_tokens_unaffected(self, make_app: AppFactory) -> None:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        application = await make_app(SUPABASE_URL=url)
        user = await create_user(application)
        async with client_for(application) as client:
            supabase = await client.get(
                f"{API}/users/me", headers={"Authorization": f"Bearer {mint(claims(issuer=f'{url}/auth/v1'), EC_KEY)}"}
            )
            assert supabase.status_code == 503 and supabase.json()["code"] == "jwks_unavailable"
            own = await client.get(f"{API}/users/me", headers=user.headers)
            assert own.status_code == 200
            spent = await client.post(f"{API}/credits/spend", json={"amount": 1, "reason": "x"}, headers=user.headers)
            assert spent.status_code == 200
