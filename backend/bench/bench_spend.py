"""POST /api/v1/credits/spend throughput and p99 against PostgreSQL, and the ledger invariant after the flood.

    cd backend && .venv/bin/python -m bench.bench_spend

A fresh PostgreSQL database migrated with alembic (bench.common.fresh_database), the app under uvicorn (1 worker,
no access log, rate limiting off) on a free loopback port, users created through the app's own services (so each
balance starts with its ledger row), then an async httpx driver: BENCH_CONNECTIONS (32) connections for
BENCH_SPEND_DURATION (10) seconds per scenario after a short warm-up. Scenarios, one printed line each:

- one user: every request takes 1 credit from the same balance (the row lock serialises them: the worst case);
- one user, Idempotency-Key: the same, each request with a fresh key (savepoint + unique-index check);
- 32 users: each connection spends from its own balance (no contention; what many users cost).

A baseline line (GET /health/live, same driver) comes first, for scale: it shows what the machine and the
driver allow at that moment. After each scenario the balances must equal their ledger sums and the number of
successful answers.
Exit status 1 when a check fails or a request errs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select

from app.auth import service as auth_service
from app.core import security
from app.core.context import RequestContext
from app.core.data import session_tx
from app.core.db import create_engine, create_sessionmaker
from app.credits.models import CreditTransaction
from app.users import service as user_service
from app.users.models import Profile
from bench import common
from bench.common import Result, figure, say
from bench.seed import TOKEN_MINUTES, settings_for

DURATION = float(os.environ.get("BENCH_SPEND_DURATION", "10"))
WARMUP = float(os.environ.get("BENCH_SPEND_WARMUP", "2"))
CONNECTIONS = common.CONNECTIONS
START_CREDITS = 900_000_000  # far more than any run can spend, 1 credit at a time
SPEND_PATH = "/api/v1/credits/spend"


@dataclass
class Account:
    id: uuid.UUID
    token: str


async def create_accounts(dsn: str, count: int) -> list[Account]:
    """Users with a profile holding START_CREDITS (and its ledger row) and a session each, via the services."""
    settings = settings_for(dsn)
    engine = create_engine(settings)
    hashed = await security.hash_password("bench-Passw0rd-spend-7d1e")
    accounts = []
    try:
        async with create_sessionmaker(engine)() as session:
            tx = session_tx(session, RequestContext(ip_address="127.0.0.1", user_agent=None))
            for i in range(count):
                user = await user_service.create_user(
                    tx, email=f"spend-{i}-{uuid.uuid4().hex[:8]}@example.com", hashed_password=hashed
                )
                await user_service.get_or_create_profile(tx, user_id=user.id, full_name=None, credits=START_CREDITS)
                tokens = await auth_service.start_session(tx, settings, user_id=user.id)
                accounts.append(Account(user.id, tokens.access_token))
            await session.commit()
    finally:
        await engine.dispose()
    return accounts


async def ledger_check(dsn: str, accounts: list[Account]) -> tuple[int, list[str]]:
    """(credits spent in total, problems): every balance must equal its ledger sum and never be negative."""
    engine = create_engine(settings_for(dsn))
    problems, spent = [], 0
    try:
        async with create_sessionmaker(engine)() as session:
            for account in accounts:
                balance = await session.scalar(select(Profile.credits).where(Profile.id == account.id))
                ledger = await session.scalar(
                    select(func.sum(CreditTransaction.amount)).where(CreditTransaction.user_id == account.id)
                )
                if balance is None or balance < 0 or balance != ledger:
                    problems.append(f"user {account.id}: balance {balance} != ledger sum {ledger}")
                spent += START_CREDITS - (balance or 0)
    finally:
        await engine.dispose()
    return spent, problems


@contextlib.contextmanager
def load_cpu() -> Iterator[None]:
    """Run the driver on the CPU bench.common keeps free of the server, then restore the affinity."""
    before = os.sched_getaffinity(0)
    if common.PINNING:
        os.sched_setaffinity(0, {common.LOAD_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def drive(
    base_url: str, accounts: list[Account], *, seconds: float, keys: bool, path: str = SPEND_PATH
) -> tuple[Result, int]:
    """CONNECTIONS workers, each on its own account (round-robin), until the deadline: (result, answered 200).

    POST ``{"amount": 1}`` to SPEND_PATH; any other ``path`` is a GET (the baseline).
    """
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures = 0
    body = {"amount": 1, "reason": "bench"}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def worker(account: Account) -> None:
            nonlocal failures
            headers = {"Authorization": f"Bearer {account.token}"}
            while time.perf_counter() < deadline and len(latencies) < common.MAX_REQUESTS:
                if keys:
                    headers["Idempotency-Key"] = uuid.uuid4().hex
                start = time.perf_counter()
                try:
                    if path == SPEND_PATH:
                        response = await client.post(path, json=body, headers=headers)
                    else:
                        response = await client.get(path, headers=headers)
                except httpx.HTTPError:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[response.status_code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(accounts[i % len(accounts)]) for i in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    errors = failures + sum(n for status, n in statuses.items() if status != 200)
    result = Result(
        rps=count / elapsed,
        p50_ms=latencies[count // 2] * 1000 if count else float("nan"),
        p99_ms=latencies[min(count - 1, int(count * 0.99))] * 1000 if count else float("nan"),
        requests=count + failures,
        errors=errors,
        tool="httpx",
        extra={"statuses": dict(statuses)},
    )
    return result, statuses[200]


def scenario(srv: common.Server, dsn: str, label: str, accounts: list[Account], *, keys: bool) -> bool:
    if WARMUP > 0:
        with load_cpu():
            asyncio.run(drive(srv.base_url, accounts, seconds=WARMUP, keys=keys))
    spent_before, _ = asyncio.run(ledger_check(dsn, accounts))
    cpu_before = srv.cpu_seconds()
    with load_cpu():
        result, ok = asyncio.run(drive(srv.base_url, accounts, seconds=DURATION, keys=keys))
    result.cpu_us = (srv.cpu_seconds() - cpu_before) / max(1, result.requests) * 1e6
    spent_after, problems = asyncio.run(ledger_check(dsn, accounts))
    say(figure(label, result))
    if spent_after - spent_before != ok:
        problems.append(f"{ok} spends answered 200 but {spent_after - spent_before} credits left the balances")
    for problem in problems:
        say(f"# INVARIANT BROKEN ({label}): {problem}")
    return not problems and result.errors == 0


def baseline_line(srv: common.Server, accounts: list[Account]) -> bool:
    """GET /health/live with the same driver: what this machine and driver allow right now, for scale."""
    with load_cpu():
        asyncio.run(drive(srv.base_url, accounts, seconds=min(WARMUP, 1), keys=False, path="/health/live"))
        result, _ = asyncio.run(drive(srv.base_url, accounts, seconds=DURATION / 2, keys=False, path="/health/live"))
    say(figure("baseline: GET /health/live (same driver)", result))
    return result.errors == 0


def main() -> int:
    say(
        f"# POST /credits/spend, PostgreSQL, uvicorn 1 worker; {CONNECTIONS} connections (httpx), "
        f"{DURATION:.0f} s per scenario after {WARMUP:.0f} s warm-up; machine {common.machine()}, "
        f"load {common.load_average()}"
    )
    ok = True
    with common.fresh_database("spend") as dsn:
        accounts = asyncio.run(create_accounts(dsn, CONNECTIONS))
        env = {"ACCESS_TOKEN_EXPIRE_MINUTES": str(TOKEN_MINUTES)}
        with common.app_server(dsn, **env) as srv:
            ok &= baseline_line(srv, accounts)
            ok &= scenario(srv, dsn, "spend: one user (one hot row)", accounts[:1], keys=False)
            ok &= scenario(srv, dsn, "spend: one user, fresh Idempotency-Key each", accounts[:1], keys=True)
            ok &= scenario(srv, dsn, f"spend: {len(accounts)} users (one per connection)", accounts, keys=False)
    say(f"# ledger invariant (balance = ledger sum = successful spends): {'ok' if ok else 'BROKEN'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
