"""``python -m bench export``: the worker's memory while it streams ``GET /users/me/export`` (opt-in).

Seeds one user with 1,000 ledger rows and one with 100,000 ledger rows and 100,000 audit events, then downloads
each user's export from a uvicorn worker (pinned to one CPU, as every bench server) and reads the worker's
resident memory from /proc: ``VmRSS`` before, and the peak (``VmHWM``, reset through ``clear_refs`` before each
download). For comparison, the heap an all-at-once export of the large ledger would take (ORM rows plus one
``json.dumps``) is measured with tracemalloc in this process.

Goal: the large export raises the worker's peak by less than 16 MB more than the small one does (memory flat
in the ledger's length), and its RSS after three large exports has not grown by more than 8 MB.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import select

from bench import common
from bench.common import say
from bench.seed import TOKEN_MINUTES, insert_sessions, insert_users, settings_for

SMALL = 1_000
LARGE = int(os.environ.get("BENCH_EXPORT_ROWS", "100000"))
PEAK_GOAL_MB = 16.0
GROWTH_GOAL_MB = 8.0


@dataclass
class World:
    small: str  # access tokens
    large: str
    large_id: uuid.UUID


async def seed(dsn: str) -> World:
    connection = await asyncpg.connect(dsn, command_timeout=600)
    try:
        users = await insert_users(connection, 2, hashed="x", prefix="export")
        for user, rows, events in ((users[0], SMALL, SMALL), (users[1], LARGE, LARGE)):
            await connection.execute(
                """
                INSERT INTO credit_transactions (id, user_id, amount, balance_after, reason, created_at)
                SELECT gen_random_uuid(), $1, -1, 900000000 - i, 'bench export item ' || i,
                       now() - interval '1 day' + i * interval '1 ms'
                FROM generate_series(1, $2) AS i
                """,
                user.id,
                rows,
            )
            await connection.execute(
                """
                INSERT INTO audit_events (id, action, actor_id, subject_user_id, ip_address, details, created_at)
                SELECT gen_random_uuid(), 'credits.spent', $1, $1, '203.0.113.7',
                       json_build_object('amount', 1, 'reason', 'bench export item ' || i, 'balance', i),
                       now() - interval '1 day' + i * interval '1 ms'
                FROM generate_series(1, $2) AS i
                """,
                user.id,
                events,
            )
        await connection.execute("VACUUM ANALYZE")
        tokens = await insert_sessions(connection, settings_for(dsn), users)
    finally:
        await connection.close()
    return World(small=tokens[0].access_token, large=tokens[1].access_token, large_id=users[1].id)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


@dataclass
class Download:
    label: str
    megabytes: float
    seconds: float
    rss_before: float
    peak: float
    rss_after: float

    @property
    def peak_growth(self) -> float:
        return self.peak - self.rss_before

    def line(self) -> str:
        return (
            f"{self.label:<34} {self.megabytes:6.1f} MB in {self.seconds:5.2f} s   RSS before {self.rss_before:6.1f} MB"
            f"  peak {self.peak:6.1f} MB (+{self.peak_growth:4.1f})  after {self.rss_after:6.1f} MB"
        )


def download(base_url: str, pid: int, token: str, label: str) -> Download:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _status_kb(pid, "VmRSS") / 1024
    size = 0
    start = time.perf_counter()
    with (
        httpx.Client(timeout=300) as client,
        client.stream("GET", base_url + "/api/v1/users/me/export", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes():
            size += len(chunk)
    seconds = time.perf_counter() - start
    peak = _status_kb(pid, "VmHWM") / 1024
    after = _status_kb(pid, "VmRSS") / 1024
    return Download(label, size / 1e6, seconds, before, peak, after)


async def all_at_once_mb(dsn: str, user_id: uuid.UUID) -> float:
    """The heap a naive export of the large ledger takes: every row as an ORM object, then one json.dumps."""
    from app.core.db import create_engine, create_sessionmaker
    from app.credits.models import CreditTransaction

    engine = create_engine(settings_for(dsn))
    try:
        async with create_sessionmaker(engine)() as session:
            one = select(CreditTransaction).where(CreditTransaction.user_id == user_id).limit(1)
            await session.scalars(one)  # compile caches, the connection: not what is measured
            session.expunge_all()
            gc.collect()
            tracemalloc.start()
            rows = list(await session.scalars(select(CreditTransaction).where(CreditTransaction.user_id == user_id)))
            text = json.dumps(
                [
                    {"id": str(r.id), "amount": r.amount, "reason": r.reason, "created_at": r.created_at.isoformat()}
                    for r in rows
                ]
            )
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            del rows, text
    finally:
        await engine.dispose()
    return peak / 1e6


def main() -> int:
    say(f"# bench export: {time.strftime('%Y-%m-%d %H:%M')}  {common.machine()}  load {common.load_average()}")
    with common.fresh_database("export") as dsn:
        started = time.perf_counter()
        world = asyncio.run(seed(dsn))
        say(f"# seeded {SMALL:,} + {LARGE:,} ledger rows and audit events in {time.perf_counter() - started:.1f} s")
        with common.app_server(dsn, ACCESS_TOKEN_EXPIRE_MINUTES=str(TOKEN_MINUTES)) as app:
            pid = app.process.pid
            download(app.base_url, pid, world.small, "warm-up")
            small = [download(app.base_url, pid, world.small, f"export, {SMALL:,} rows each") for _ in range(2)]
            large = [download(app.base_url, pid, world.large, f"export, {LARGE:,} rows each") for _ in range(3)]
            for result in small + large:
                say(result.line())
        naive = asyncio.run(all_at_once_mb(dsn, world.large_id))
    say(f"{'all at once (ORM rows + json.dumps)':<34} heap peak {naive:6.1f} MB for the {LARGE:,} ledger rows alone")
    extra = max(r.peak_growth for r in large) - max(r.peak_growth for r in small)
    growth = large[-1].rss_after - large[0].rss_before
    ok_peak, ok_growth = extra < PEAK_GOAL_MB, growth <= GROWTH_GOAL_MB
    say(common.verdict(f"peak MB over the small export's, {LARGE:,} rows", extra, f"< {PEAK_GOAL_MB:.0f}", ok_peak))
    say(common.verdict("RSS growth MB over 3 large exports", growth, f"<= {GROWTH_GOAL_MB:.0f}", ok_growth))
    say(f"# load average after: {common.load_average()}")
    return 0 if ok_peak and ok_growth else 1
