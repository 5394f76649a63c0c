"""Organization API keys against own access tokens: ``python -m bench.bench_api_keys`` (also part of ``make bench``).

The same request, ``GET /api/v1/organizations/{id}/members?limit=50`` (50 members), on one app server in one run,
once with own access tokens of 16 admins and once with 16 organization API keys (one made by each of them),
alternating the order from round to round. Resolving a key is one indexed lookup (the key by its prefix with its
creator and the creator's current membership, app/auth/identity.py) plus two HMACs, and the organization guard then
needs no query of its own; an own token is the session lookup plus the guard's membership query. Goal: the key
request within 10 % of the own-token request (median of the per-round ratios >= 0.90).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg

from app.core import security
from bench import common
from bench.common import Req, Result, figure, say, verdict
from bench.hot import bearer, check, round_verdict
from bench.seed import PASSWORD, TOKEN_MINUTES, insert_org, insert_sessions, insert_users, now, settings_for

N_MEMBERS = 50
N_CALLERS = 16  # admins: each has an own session and made one key
GOAL = 0.90


@dataclass
class World:
    org_id: uuid.UUID
    tokens: list[str]
    keys: list[str]


async def seed(dsn: str) -> World:
    settings = settings_for(dsn)
    hashed = security.pwd_context.hash(PASSWORD)
    connection = await asyncpg.connect(dsn)
    try:
        users = await insert_users(connection, N_MEMBERS, hashed=hashed, prefix="keys")
        org_id = await insert_org(connection, users, slug="bench-keys")
        callers = users[1 : N_CALLERS + 1]
        await connection.execute(
            "UPDATE memberships SET role = 'admin' WHERE org_id = $1 AND user_id = ANY($2::uuid[])",
            org_id,
            [c.id for c in callers],
        )
        tokens = [t.access_token for t in await insert_sessions(connection, settings, callers)]
        keys, rows = [], []
        stamp = now()
        for caller in callers:
            prefix, key = security.new_api_key(settings)
            keys.append(key)
            secret_hash = security.api_key_hash(settings, key)
            rows.append((uuid.uuid4(), org_id, caller.id, "bench", "member", prefix, secret_hash, stamp))
        await connection.copy_records_to_table(
            "api_keys",
            records=rows,
            columns=("id", "org_id", "created_by", "name", "role", "prefix", "secret_hash", "created_at"),
        )
    finally:
        await connection.close()
    return World(org_id=org_id, tokens=tokens, keys=keys)


def main() -> int:
    say(f"# bench api keys: {time.strftime('%Y-%m-%d %H:%M')}  {common.machine()}  load {common.load_average()}")
    say(
        f"# {common.CONNECTIONS} connections, {common.ROUNDS} rounds x {common.DURATION:.0f} s alternating, "
        f"pinning {'on' if common.PINNING else 'off'}"
    )
    with common.fresh_database("apikeys") as dsn:
        world = asyncio.run(seed(dsn))
        path = f"/api/v1/organizations/{world.org_id}/members?limit=50"
        loads: dict[str, list[Req]] = {
            "own": bearer(world.tokens, "GET", path),
            "key": bearer(world.keys, "GET", path),
        }
        with common.app_server(dsn, ACCESS_TOKEN_EXPIRE_MINUTES=str(TOKEN_MINUTES)) as app:
            for requests in loads.values():
                check(app.base_url, requests)
            results: dict[str, list[Result]] = {"own": [], "key": []}
            for round_no in range(common.ROUNDS):
                order = ("own", "key") if round_no % 2 == 0 else ("key", "own")
                for name in order:
                    results[name].append(common.load(app, loads[name]))
                say(f"# round {round_no + 1}/{common.ROUNDS} ({' then '.join(order)}), load {common.load_average()}")
    own, key = common.median_result(results["own"]), common.median_result(results["key"])
    say(figure("GET /organizations/{id}/members (own token)", own))
    say(figure("GET /organizations/{id}/members (API key)", key))
    ratios = [k.rps / o.rps for k, o in zip(results["key"], results["own"], strict=True)]
    errors = sum(x.errors for runs in results.values() for x in runs)
    checks = [
        round_verdict("members: API key / own token", ratios, ">=", GOAL),
        verdict("errors (non-2xx) in measured runs", float(errors), "= 0", errors == 0),
    ]
    for line in checks:
        say(line)
    say(f"# load {common.load_average()}")
    return 1 if any(": MISS)" in line for line in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
