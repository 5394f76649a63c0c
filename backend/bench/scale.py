"""``python -m bench scale``: costs stay flat as data grows (opt-in: it seeds millions of rows, minutes).

1. Two databases with the same small world: a superuser, one user with 60 ledger rows, an organization of
   50 members. One of them also gets the bulk, by SQL (generate_series): 1,000,000 users, 2,000,000 sessions,
   10,000 organizations with 200,000 memberships, 5,000,000 ledger rows and 1,000,000 audit events
   (BENCH_SCALE=0.1 for a tenth), then VACUUM ANALYZE.
2. An app server on each; each endpoint's latency (p50 of sequential requests on one connection, from another
   process) is measured on the nearly empty and the big database in alternating rounds (BENCH_ROUNDS), so
   both sides of a ratio are measured a minute apart, not a seeding apart. Each figure is the median over
   the rounds of big / empty (goal <= 1.5).
3. Every SQL statement the measured requests run (captured in-process: through the engine and on the asyncpg
   pool of app/core/data.py) is EXPLAINed on the big database; a sequential scan of a table over 10,000 rows
   is printed as FAIL.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event

from app.core import security
from app.core.driver import Driver
from app.main import create_app
from app.state import state_of
from bench import common
from bench.common import say
from bench.seed import PASSWORD, TOKEN_MINUTES, insert_org, insert_sessions, insert_users, settings_for

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "300"))
LARGE_TABLE_ROWS = 10_000
GOAL = 1.5

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken", "Leslie", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Perlman", "Thompson"]


def n(count: int) -> int:
    return max(1, int(count * SCALE))


async def seed_small(dsn: str) -> dict[str, Any]:
    settings = settings_for(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        hashed = security.pwd_context.hash(PASSWORD)
        admin, user = await insert_users(connection, 2, hashed=hashed, prefix="scale", superuser_first=True)
        await connection.execute("UPDATE users SET full_name = 'Zelda Quokka' WHERE id = $1", user.id)
        members = await insert_users(connection, 49, hashed=hashed, prefix="member")
        # A full page for search=user4242 on the nearly empty database too (user4242x0@... and so on; the bulk's
        # own user4242... come on top in the big one): both sides then answer 20 users, and the ratio is about
        # the table's size, not about serializing 20 users against an empty page.
        await insert_users(connection, 25, hashed=hashed, prefix="user4242x")
        org_id = await insert_org(connection, [user, *members])
        await connection.execute(
            "INSERT INTO credit_transactions (id, user_id, amount, balance_after, reason, actor_id, created_at) "
            "SELECT gen_random_uuid(), $1, -1, 1000 - i, 'bench', $1, now() - make_interval(secs => 60 - i) "
            "FROM generate_series(1, 60) AS i",
            user.id,
        )
        await connection.execute(
            "INSERT INTO audit_events (id, action, actor_id, subject_user_id, ip_address, details, created_at) "
            "SELECT gen_random_uuid(), 'credits.spent', $1, $1, '127.0.0.1', '{}'::json, "
            "now() - make_interval(secs => 100 - i) FROM generate_series(1, 100) AS i",
            user.id,
        )
        admin_tokens, user_tokens = await insert_sessions(connection, settings, [admin, user])
    finally:
        await connection.close()
    return {
        "user_id": user.id,
        "org_id": org_id,
        "admin": admin_tokens.access_token,
        "user": user_tokens.access_token,
    }


BULK = [
    (
        "users",
        "INSERT INTO users (id, email, hashed_password, full_name, is_active, is_superuser, is_verified, "
        "auth_provider, created_at, updated_at) "
        "SELECT gen_random_uuid(), 'user' || i || '@example.com', 'x', "
        f"(ARRAY{FIRST!r})[1 + i % {len(FIRST)}] || ' ' || (ARRAY{LAST!r})[1 + (i / {len(FIRST)}) % {len(LAST)}], "
        "true, false, i % 3 = 0, 'local', now() - make_interval(secs => i), now() "
        "FROM generate_series(1, {users}) AS i",
    ),
    ("numbered users", "CREATE UNLOGGED TABLE bench_u AS SELECT id, row_number() OVER () AS n FROM users"),
    ("index", "CREATE UNIQUE INDEX ON bench_u (n)"),
    (
        "auth_sessions",
        "INSERT INTO auth_sessions (id, user_id, token_salt, generation, created_at, last_used_at, expires_at, "
        "revoked_at) SELECT gen_random_uuid(), u.id, md5(i::text), 0, now() - make_interval(secs => i), "
        "now() - make_interval(secs => i), now() + interval '7 days', CASE WHEN i % 4 = 0 THEN now() END "
        "FROM generate_series(1, {sessions}) AS i JOIN bench_u u ON u.n = 1 + i % {users}",
    ),
    (
        "organizations",
        "INSERT INTO organizations (id, name, slug, created_at, updated_at) "
        "SELECT gen_random_uuid(), 'Org ' || i, 'org-' || i, now() - make_interval(secs => i), now() "
        "FROM generate_series(1, {orgs}) AS i",
    ),
    ("numbered orgs", "CREATE UNLOGGED TABLE bench_o AS SELECT id, row_number() OVER () AS n FROM organizations"),
    ("index", "CREATE UNIQUE INDEX ON bench_o (n)"),
    (
        "memberships",
        "INSERT INTO memberships (org_id, user_id, role, created_at) "
        "SELECT o.id, u.id, CASE WHEN i <= {orgs} THEN 'owner' ELSE 'member' END, now() - make_interval(secs => i) "
        "FROM generate_series(1, {memberships}) AS i "
        "JOIN bench_o o ON o.n = 1 + i % {orgs} JOIN bench_u u ON u.n = 1 + (i::bigint * 7919) % {users} "
        "ON CONFLICT DO NOTHING",
    ),
    (
        "credit_transactions",
        "INSERT INTO credit_transactions (id, user_id, amount, balance_after, reason, actor_id, created_at) "
        "SELECT gen_random_uuid(), u.id, -1, 1000, 'seed', u.id, now() - make_interval(secs => i) "
        "FROM generate_series(1, {ledger}) AS i JOIN bench_u u ON u.n = 1 + i % {users}",
    ),
    (
        "audit_events",
        "INSERT INTO audit_events (id, action, actor_id, subject_user_id, ip_address, details, created_at) "
        "SELECT gen_random_uuid(), 'credits.spent', u.id, u.id, '127.0.0.1', '{{}}'::json, "
        "now() - make_interval(secs => i) "
        "FROM generate_series(1, {audit}) AS i JOIN bench_u u ON u.n = 1 + i % {users}",
    ),
    ("cleanup", "DROP TABLE bench_u, bench_o"),
]


async def seed_big(dsn: str) -> None:
    sizes = {
        "users": n(1_000_000),
        "sessions": n(2_000_000),
        "orgs": n(10_000),
        "memberships": n(200_000),
        "ledger": n(5_000_000),
        "audit": n(1_000_000),
    }
    connection = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        await connection.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        for label, sql in BULK:
            start = time.perf_counter()
            status = await connection.execute(sql.format(**sizes))
            say(f"# seeded {label}: {status} in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        await connection.execute("VACUUM ANALYZE")
        say(f"# VACUUM ANALYZE in {time.perf_counter() - start:.1f} s")
    finally:
        await connection.close()


def endpoints(world: dict[str, Any]) -> dict[str, tuple[str, str]]:
    user, admin = world["user"], world["admin"]
    return {
        "GET /users/me": (user, "/api/v1/users/me"),
        "GET /credits/transactions": (user, "/api/v1/credits/transactions"),
        "GET /organizations/{id}/members": (user, f"/api/v1/organizations/{world['org_id']}/members"),
        "GET /admin/users?search=quokka": (admin, "/api/v1/admin/users?search=quokka"),
        "GET /admin/users?search=user4242": (admin, "/api/v1/admin/users?search=user4242"),
        "GET /admin/audit-events?user_id=": (admin, f"/api/v1/admin/audit-events?user_id={world['user_id']}"),
        "GET /admin/audit-events": (admin, "/api/v1/admin/audit-events"),
    }


def latencies(srv: common.Server, world: dict[str, Any]) -> dict[str, float]:
    """p50 ms of each endpoint: one connection, sequential, bounded in count and time."""
    result = {}
    for name, (token, path) in endpoints(world).items():
        request = {"method": "GET", "path": path, "headers": {"Authorization": f"Bearer {token}"}}
        spec = {"port": srv.port, "connections": 1, "duration": 20, "max_requests": REQUESTS, "requests": [request]}
        common.run_driver({**spec, "duration": 3, "max_requests": 30})  # warm caches
        data = common.run_driver(spec)
        if data["errors"]:
            raise RuntimeError(f"{name}: {data['statuses']}")
        result[name] = data["p50_ms"]
    return result


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan":
        found.append(plan.get("Relation Name", "?"))
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


async def explain_all(dsn: str, world: dict[str, Any]) -> bool:
    """EXPLAIN every statement the measured requests run; False when a large table is scanned sequentially."""
    settings = settings_for(dsn, RATE_LIMIT_ENABLED=False, SUPABASE_URL=None, LOG_LEVEL="WARNING")
    app = create_app(settings)
    captured: list[tuple[str, str, Any]] = []
    ok = True
    async with app.router.lifespan_context(app):
        current = {"name": ""}

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                captured.append((current["name"], statement, parameters))

        def log(record: Any) -> None:  # a statement on the app's asyncpg pool (app/core/data.py)
            capture(None, None, record.query, record.args, None, False)

        opened = Driver.connection

        @asynccontextmanager
        async def logged(driver: Driver) -> AsyncIterator[Any]:
            async with opened(driver) as connection:
                connection.add_query_logger(log)
                try:
                    yield connection
                finally:
                    connection.remove_query_logger(log)

        event.listen(state_of(app).engine.sync_engine, "before_cursor_execute", capture)
        Driver.connection = logged  # type: ignore[method-assign, assignment]
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for name, (token, path) in endpoints(world).items():
                    current["name"] = name
                    response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                    response.raise_for_status()
                    await asyncio.sleep(0.05)  # asyncpg calls query loggers on a later turn of the loop
        finally:
            Driver.connection = opened  # type: ignore[method-assign]
    connection = await asyncpg.connect(dsn)
    try:
        sizes = {
            r["relname"]: r["reltuples"]
            for r in await connection.fetch("SELECT relname, reltuples FROM pg_class WHERE relkind = 'r'")
        }
        for name, statement, parameters in captured:
            params = tuple(parameters) if isinstance(parameters, (list, tuple)) else ()
            rows = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *params)
            plan = json.loads(rows)[0]["Plan"]
            text = "\n".join(r[0] for r in await connection.fetch(f"EXPLAIN {statement}", *params))
            bad = [t for t in _seq_scans(plan) if sizes.get(t, 0) > LARGE_TABLE_ROWS]
            verdict = f"FAIL: sequential scan of {', '.join(bad)}" if bad else "ok: index served"
            ok = ok and not bad
            say(f"# EXPLAIN [{name}] {verdict}\n#   {' '.join(statement.split())[:300]}")
            say("\n".join(f"#     {line}" for line in text.splitlines()))
    finally:
        await connection.close()
    return ok


def main() -> int:
    say(f"# bench scale x{SCALE}: {time.strftime('%Y-%m-%d %H:%M')}  {common.machine()}  load {common.load_average()}")
    env = {"ACCESS_TOKEN_EXPIRE_MINUTES": str(TOKEN_MINUTES)}
    with common.fresh_database("scale_empty") as empty_dsn, common.fresh_database("scale") as dsn:
        empty_world = asyncio.run(seed_small(empty_dsn))
        world = asyncio.run(seed_small(dsn))
        asyncio.run(seed_big(dsn))
        small: list[dict[str, float]] = []
        big: list[dict[str, float]] = []
        with common.app_server(empty_dsn, **env) as empty_srv, common.app_server(dsn, **env) as big_srv:
            for round_no in range(common.ROUNDS):
                small.append(latencies(empty_srv, empty_world))
                big.append(latencies(big_srv, world))
                say(f"# round {round_no + 1}/{common.ROUNDS} done, load {common.load_average()}")
        index_ok = asyncio.run(explain_all(dsn, world))
    failed = not index_ok
    for name in small[0]:
        ratios = [b[name] / e[name] for e, b in zip(small, big, strict=True)]
        ratio = common.median(ratios)
        ok = ratio <= GOAL
        failed = failed or not ok
        rounds = " ".join(f"{r:.2f}" for r in ratios)
        say(
            f"{name:<44} empty {common.median([e[name] for e in small]):7.2f} ms  "
            f"big {common.median([b[name] for b in big]):7.2f} ms  = {ratio:4.2f}x "
            f"(goal <= {GOAL}: {'PASS' if ok else 'MISS'})  rounds {rounds}"
        )
    say(f"{'every list query served by an index':<44} {'PASS' if index_ok else 'FAIL (see EXPLAIN above)'}")
    return 1 if failed else 0
