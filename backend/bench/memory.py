"""``python -m bench memory``: resident memory of one worker over 3 x 50,000 requests (opt-in).

A mix of the hot paths (own and Supabase tokens, profile, members, spends) from another process; the RSS of
the uvicorn worker is read from /proc after each 50,000. Goals: under 150 MB after 100,000 requests, and no
growth between the second and the third 50,000 (a tolerance of 2 MB for allocator noise).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from bench import common
from bench.common import Req, say
from bench.hot import N_MEMBERS, bearer, check, seed
from bench.seed import TOKEN_MINUTES, Supabase

SEGMENT = int(os.environ.get("BENCH_MEMORY_SEGMENT", "50000"))
LIMIT_MB = 150.0
GROWTH_TOLERANCE_MB = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    say(f"# bench memory: {time.strftime('%Y-%m-%d %H:%M')}  {common.machine()}  load {common.load_average()}")
    supabase = Supabase()
    supabase.start()
    try:
        with common.fresh_database("memory") as dsn:
            world = asyncio.run(seed(dsn))
            env = {**supabase.env(), "ACCESS_TOKEN_EXPIRE_MINUTES": str(TOKEN_MINUTES)}
            with common.app_server(dsn, **env) as app:
                sb = [supabase.token(uuid.uuid4(), algorithm=alg) for alg in ("HS256", "ES256") for _ in range(8)]
                mix: list[Req] = []
                mix += bearer(world.me_tokens, "GET", "/api/v1/users/me")
                mix += bearer(sb, "GET", "/api/v1/users/me")
                mix += bearer(world.me_tokens, "GET", "/api/v1/profile")
                mix += bearer(world.me_tokens[:N_MEMBERS], "GET", f"/api/v1/organizations/{world.org_id}/members")
                mix += bearer(
                    world.me_tokens, "POST", "/api/v1/credits/spend", json.dumps({"amount": 1, "reason": "m"})
                )
                check(app.base_url, [r for r in mix if r.method == "GET"])
                pid = app.process.pid
                readings = [rss_mb(pid)]
                say(f"{'RSS after start':<44} {readings[0]:9.1f} MB")
                for segment in range(1, 4):
                    spec = {
                        "port": app.port,
                        "connections": common.CONNECTIONS,
                        "duration": 900,
                        "max_requests": SEGMENT,
                        "requests": [r.__dict__ for r in mix],
                    }
                    data = common.run_driver(spec)
                    readings.append(rss_mb(pid))
                    say(
                        f"{f'RSS after {segment * SEGMENT:,} requests':<44} {readings[-1]:9.1f} MB"
                        f"  ({data['rps']:.0f} req/s, errors {data['errors']})"
                    )
    finally:
        supabase.stop()
    growth = readings[3] - readings[2]
    ok_limit = readings[2] < LIMIT_MB
    ok_growth = growth <= GROWTH_TOLERANCE_MB
    say(common.verdict(f"RSS MB after {2 * SEGMENT:,} requests", readings[2], f"< {LIMIT_MB:.0f}", ok_limit))
    say(common.verdict(f"RSS growth MB, 2nd -> 3rd {SEGMENT:,}", growth, f"<= {GROWTH_TOLERANCE_MB:.0f}", ok_growth))
    return 0 if ok_limit and ok_growth else 1
