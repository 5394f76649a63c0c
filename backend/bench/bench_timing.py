"""Account enumeration by timing: an unknown address is answered in about the time a known one is.

    cd backend && .venv/bin/python -m bench.bench_timing

The suite checks the work each path does, deterministically (tests/auth/test_router.py: one password
verification at the same cost for an unknown email as for a wrong password; tests/auth/test_email_flows.py: a
reset request is answered before any address is looked up); the times themselves are measured here.

A fresh PostgreSQL database migrated with alembic, the app under uvicorn (1 worker, rate limiting off), one
registered user, then BENCH_TIMING_ROUNDS (15) rounds over one connection, each sending the known and the
unknown request one after the other (a new unknown address each time), with a pause after each request so
that what a reset request does after its answer never overlaps the next one:

- POST /auth/login with a wrong password for the known email, and with an unknown email;
- POST /auth/password-reset/request for the known email, and for an unknown one.

One line per pair: the medians and their ratio known / unknown, goal between 1/1.5 and 1.5.
Exit status 1 when a ratio misses it or a request gets an unexpected status.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

import httpx

from bench import common
from bench.common import say, verdict

ROUNDS = int(os.environ.get("BENCH_TIMING_ROUNDS", "15"))
PASSWORD = "bench-Timing-Passw0rd-5c"
WRONG = "bench-Wrong-Passw0rd-5c"
GOAL = 1.5
PAUSE = 0.3  # seconds after each request


def _unknown() -> str:
    return f"nobody-{uuid.uuid4().hex[:12]}@example.com"


def _timed(client: httpx.Client, path: str, body: dict[str, str], status: int) -> float:
    start = time.perf_counter()
    response = client.post(path, json=body)
    elapsed = time.perf_counter() - start
    if response.status_code != status:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
    time.sleep(PAUSE)  # the work a reset request leaves for after its answer must not slow the next one
    return elapsed


def _pair(
    client: httpx.Client, label: str, path: str, known: dict[str, str], unknown: dict[str, str], status: int
) -> bool:
    _timed(client, path, {**unknown, "email": _unknown()}, status)  # warm-up (the dummy hash is made once)
    known_times: list[float] = []
    unknown_times: list[float] = []
    for _ in range(ROUNDS):
        known_times.append(_timed(client, path, known, status))
        unknown_times.append(_timed(client, path, {**unknown, "email": _unknown()}, status))
    known_ms = statistics.median(known_times) * 1000
    unknown_ms = statistics.median(unknown_times) * 1000
    ratio = known_ms / unknown_ms
    ok = 1 / GOAL <= ratio <= GOAL
    say(f"{label:<44} known {known_ms:7.1f} ms  unknown {unknown_ms:7.1f} ms (medians of {ROUNDS})")
    say(verdict(f"  {label}: known / unknown", ratio, f"{1 / GOAL:.2f}..{GOAL:.2f}", ok))
    return ok


def main() -> int:
    say(common.machine())
    email = f"timing-{uuid.uuid4().hex[:8]}@example.com"
    login = "/api/v1/auth/login"
    reset = "/api/v1/auth/password-reset/request"
    wrong = {"password": WRONG}
    with (
        common.fresh_database("timing") as dsn,
        common.app_server(dsn) as srv,
        httpx.Client(base_url=srv.base_url, timeout=30) as client,
    ):
        registered = client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        if registered.status_code != 201:
            raise RuntimeError(f"register: {registered.status_code} {registered.text}")
        checks = [
            _pair(client, "POST /auth/login (wrong password)", login, {"email": email, **wrong}, wrong, 401),
            _pair(client, "POST /auth/password-reset/request", reset, {"email": email}, {}, 202),
        ]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
