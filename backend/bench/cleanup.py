"""``python -m bench cleanup``: the retention cleanup on a few million rows, while requests are served (opt-in).

1. Seeds 3,200,000 rows (``BENCH_CLEANUP_SCALE`` scales them): 2,000,000 audit events over two years (about half
   older than AUDIT_RETENTION_DAYS=365), 600,000 sessions (most expired, some revoked), 200,000 email tokens,
   100,000 invitations, 200,000 MFA challenges and 100,000 Supabase tombstones, then ``VACUUM ANALYZE``.
2. ``EXPLAIN (ANALYZE, BUFFERS)`` of one batch of every target (in a transaction rolled back): each must be an
   index scan of its column (no sequential scan of the table).
3. Serves ``GET /users/me`` and ``GET /profile`` from one uvicorn worker at 32 connections, in 5-second slices:
   two before the cleanup, then for as long as ``app.cleanup.run`` (batches of 1,000) deletes, from another
   thread. Prints each slice's throughput, p50, p99 and errors, and each target's batches (count, median and
   slowest duration).

Goals: every batch plan uses an index (a table of under 10,000 rows may be scanned); no request fails during
the cleanup; the slowest batch under 1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from datetime import timedelta
from typing import Any

import asyncpg

from app import cleanup
from app.core.db import create_engine, utcnow
from app.core.driver import DriverStatement
from bench import common
from bench.common import Req, say
from bench.seed import TOKEN_MINUTES, insert_sessions, insert_users, settings_for

SCALE = float(os.environ.get("BENCH_CLEANUP_SCALE", "1"))
SLICE_SECONDS = 5.0
SLOWEST_BATCH_GOAL_S = 1.0


def n(count: int) -> int:
    return max(10, int(count * SCALE))


# Each statement runs as ``WITH a AS (<the users' and organizations' ids>) INSERT ... SELECT ... FROM a, ...``.
SEED = [
    (
        "audit_events",
        """INSERT INTO audit_events (id, action, actor_id, subject_user_id, ip_address, details, created_at)
           SELECT gen_random_uuid(), 'credits.spent', {user}, {user}, '203.0.113.7', '{{"amount": 1}}',
                  now() - (i % 730) * interval '1 day' - (i % 86400) * interval '1 second'
           FROM a, generate_series(1, {audit}) AS i""",
    ),
    (
        "auth_sessions",
        """INSERT INTO auth_sessions (id, user_id, token_salt, generation, created_at, last_used_at, expires_at,
                                      revoked_at, revoked_reason, aal)
           SELECT gen_random_uuid(), {user}, 'salt', 0, now() - interval '40 days', now() - interval '30 days',
                  now() - (i % 37) * interval '1 day' + interval '7 days',
                  CASE WHEN i % 5 = 0 THEN now() - (i % 20) * interval '1 day' END,
                  CASE WHEN i % 5 = 0 THEN 'logout' END, 'aal1'
           FROM a, generate_series(1, {sessions}) AS i""",
    ),
    (
        "email_tokens",
        """INSERT INTO email_tokens (id, user_id, purpose, token_hash, email, created_at, expires_at, used_at)
           SELECT gen_random_uuid(), {user}, 'verify_email', md5(i::text) || md5((i + 1)::text), 'x@example.com',
                  now() - interval '30 days', now() - (i % 30) * interval '1 day' + interval '2 days',
                  CASE WHEN i % 3 = 0 THEN now() - (i % 30) * interval '1 day' END
           FROM a, generate_series(1, {tokens}) AS i""",
    ),
    (
        "invitations",
        """INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at)
           SELECT gen_random_uuid(), a.orgs[1 + i % array_length(a.orgs, 1)], 'invitee' || i || '@example.com',
                  'member', md5(i::text) || md5((i + 7)::text), NULL, now() - interval '30 days',
                  now() - (i % 30) * interval '1 day' + interval '7 days'
           FROM a, generate_series(1, {invitations}) AS i""",
    ),
    (
        "mfa_challenges",
        """INSERT INTO mfa_challenges (id, user_id, failed_attempts, created_at, expires_at)
           SELECT gen_random_uuid(), {user}, 0, now() - interval '30 days',
                  now() - (i % 30) * interval '1 day' + interval '5 minutes'
           FROM a, generate_series(1, {challenges}) AS i""",
    ),
]
SEED.append(
    (
        "deleted_supabase_identities",
        """INSERT INTO deleted_supabase_identities (supabase_id, deleted_at)
           SELECT gen_random_uuid(), now() - (i % 60) * interval '1 day'
           FROM a, generate_series(1, {tombstones}) AS i""",
    )
)
LARGE_TABLE_ROWS = 10_000  # a sequential scan of a smaller table is the planner's right choice, not a miss
IDS = "WITH a AS (SELECT (SELECT array_agg(id) FROM users) AS ids, (SELECT array_agg(id) FROM organizations) AS orgs) "


async def seed(dsn: str) -> list[str]:
    sizes = {
        "audit": n(2_000_000),
        "sessions": n(600_000),
        "tokens": n(200_000),
        "invitations": n(100_000),
        "challenges": n(200_000),
        "tombstones": n(100_000),
    }
    connection = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        users = await insert_users(connection, 1000, hashed="x", prefix="cleanup")
        for i in range(10):
            await connection.execute(
                "INSERT INTO organizations (id, name, slug, created_at, updated_at)"
                " VALUES (gen_random_uuid(), $1, $1, now(), now())",
                f"cleanup-org-{i}",
            )
        await connection.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        for table, sql in SEED:
            started = time.perf_counter()
            status = await connection.execute(IDS + sql.format(user="a.ids[1 + i % array_length(a.ids, 1)]", **sizes))
            say(f"# seeded {table}: {status} in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        await connection.execute("VACUUM ANALYZE")
        say(f"# VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
        tokens = await insert_sessions(connection, settings_for(dsn), users[:16])
    finally:
        await connection.close()
    return [t.access_token for t in tokens]


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    if "Scan" in plan.get("Node Type", ""):
        found.append((plan["Node Type"], plan.get("Index Name") or plan.get("Relation Name", "?")))
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def explain(dsn: str) -> bool:
    """One batch of every target under EXPLAIN (ANALYZE, BUFFERS), rolled back."""
    settings = settings_for(dsn)
    engine = create_engine(settings)  # for its dialect only
    cutoffs = cleanup.Cutoffs(now=utcnow(), grace=cleanup.DEFAULT_GRACE, audit_retention=timedelta(days=365))
    ok = True
    connection = await asyncpg.connect(dsn)
    try:
        sizes = {
            r["relname"]: r["reltuples"]
            for r in await connection.fetch("SELECT relname, reltuples FROM pg_class WHERE relkind = 'r'")
        }
        for target in cleanup.TARGETS:
            batch = target.batch(target.cutoff(cutoffs), cleanup.BATCH_SIZE, postgresql=True)
            statement = DriverStatement(engine.dialect, batch)
            transaction = connection.transaction()
            await transaction.start()
            try:
                raw = await connection.fetchval(
                    f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.sql}", *statement.args({})
                )
                lines = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", *statement.args({}))
            finally:
                await transaction.rollback()
            document = json.loads(raw)[0]
            scans = _scans(document["Plan"])
            seq = [name for kind, name in scans if kind == "Seq Scan" and sizes.get(name, 0) > LARGE_TABLE_ROWS]
            verdict = "FAIL: sequential scan" if seq else "ok: " + ", ".join(f"{k} {n}" for k, n in scans)
            ok = ok and not seq
            say(f"# EXPLAIN [{target.name}] {verdict}; {document['Execution Time']:.1f} ms")
            say("\n".join(f"#     {record[0]}" for record in lines))
    finally:
        await connection.close()
        await engine.dispose()
    say(f"# the batch statement: {' '.join(str(batch.compile(dialect=engine.dialect)).split())}")
    return ok


def main() -> int:
    say(f"# bench cleanup: {time.strftime('%Y-%m-%d %H:%M')}  {common.machine()}  load {common.load_average()}")
    with common.fresh_database("cleanup") as dsn:
        tokens = asyncio.run(seed(dsn))
        plans_ok = asyncio.run(explain(dsn))
        requests = [Req("GET", "/api/v1/users/me", {"Authorization": f"Bearer {t}"}) for t in tokens]
        requests += [Req("GET", "/api/v1/profile", {"Authorization": f"Bearer {t}"}) for t in tokens]
        with common.app_server(dsn, ACCESS_TOKEN_EXPIRE_MINUTES=str(TOKEN_MINUTES)) as app:
            before = [common.load(app, requests, duration=SLICE_SECONDS, warmup=1 if i == 0 else 0) for i in range(2)]
            outcome: dict[str, Any] = {}

            async def clean() -> cleanup.Report:
                engine = create_engine(settings_for(dsn))
                try:
                    return await cleanup.run(engine, settings_for(dsn))
                finally:
                    await engine.dispose()

            def work() -> None:
                started = time.perf_counter()
                outcome["report"] = asyncio.run(clean())
                outcome["seconds"] = time.perf_counter() - started

            thread = threading.Thread(target=work)
            thread.start()
            during = []
            while thread.is_alive():
                during.append(common.load(app, requests, duration=SLICE_SECONDS, warmup=0))
            thread.join()
        report: cleanup.Report = outcome["report"]
    for label, results in (("before", before), ("during", during)):
        for result in results:
            say(common.figure(f"GET /users/me + /profile, {label} cleanup", result))
    say(f"# cleanup: {report.total:,} rows in {outcome['seconds']:.1f} s")
    slowest = 0.0
    for done in report.done:
        seconds = done.batch_seconds or [0.0]
        slowest = max(slowest, max(seconds))
        say(
            f"  {done.target:<26} {done.deleted:>9,} rows {done.batches:>5} batches"
            f"  median {statistics.median(seconds) * 1000:6.1f} ms  slowest {max(seconds) * 1000:6.1f} ms"
        )
    errors = sum(result.errors for result in during)
    say(common.verdict("every batch through an index (1 = yes)", float(plans_ok), "= 1", plans_ok))
    say(common.verdict("failed requests during the cleanup", errors, "= 0", errors == 0))
    say(common.verdict("slowest batch, s", slowest, f"< {SLOWEST_BATCH_GOAL_S:.0f}", slowest < SLOWEST_BATCH_GOAL_S))
    say(f"# load average after: {common.load_average()}")
    return 0 if plans_ok and errors == 0 and slowest < SLOWEST_BATCH_GOAL_S else 1
