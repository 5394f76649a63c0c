"""What rate limiting costs per request: ``python -m bench.bench_ratelimit`` (also part of ``make bench``).

Figures, in process (no HTTP server, so only the limiter's own cost shows):
- one counter hit on each storage (limits' async memory storage; async Redis, i.e. one network round trip);
- a request through RateLimitMiddleware in front of an empty ASGI app, against the same app without it
  (default rule with a bearer token: JWT check + one hit; login rule: body buffered, email read, two hits);
- how long the event loop is blocked: a synchronous redis-py INCR (what slowapi does) blocks the loop for the
  whole round trip; the async storage used here yields while waiting. A ticker task measures the loop's lag
  while 64 requests run concurrently.
Redis: 127.0.0.1:6379/15 (BENCH_REDIS_URL), keys under a throwaway prefix, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from app.core import security
from app.core.rate_limit import RateLimiter, RateLimitMiddleware
from app.core.settings import Settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
ROUNDS = int(os.environ.get("BENCH_RL_ROUNDS", "2000"))
SECRET = "bench-secret-key-that-is-long-enough-0123456789"


def redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


async def empty_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def request_scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": headers,
        "query_string": b"",
        "client": ("203.0.113.7", 5000),
        "state": {"client_ip": "203.0.113.7"},
    }


async def call(app: Any, scope: dict[str, Any], body: bytes = b"") -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def timed(rounds: int, step: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """(median, p99) in microseconds."""
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        await step(index)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def line(label: str, figures: tuple[float, float]) -> None:
    print(f"{label:<58} median {figures[0]:8.1f} us   p99 {figures[1]:8.1f} us", flush=True)


async def bench_storage(uri: str, prefix: str) -> None:
    limiter = RateLimiter(uri, key_prefix=prefix)
    from limits import parse

    item = parse("1000000/minute")
    await limiter.hit([(item, item.key_for("warm", "x"))])  # connect, load the script
    line(f"hit, {uri.split(':')[0]} storage", await timed(ROUNDS, lambda i: limiter.hit([(item, f"k{i % 100}")])))
    if uri.startswith("memory"):
        # Many live keys (many clients in one window) must not make each hit slower; the loop turns between
        # hits as it does between requests.
        for index in range(100_000):
            await limiter.hit([(item, f"fill{index}")])

        async def hit_and_yield(i: int) -> None:
            await limiter.hit([(item, f"k{i % 100}")])
            await asyncio.sleep(0)

        line("hit + loop turn, memory storage, 100,000 live keys", await timed(ROUNDS, hit_and_yield))
    await limiter.aclose()


async def bench_middleware(uri: str, prefix: str) -> None:
    settings = Settings(
        _env_file=None,
        SECRET_KEY=SECRET,
        RATE_LIMIT_ENABLED=True,
        RATE_LIMIT_DEFAULT="1000000/minute",
        RATE_LIMIT_LOGIN="1000000/minute",
        RATE_LIMIT_LOGIN_EMAIL="1000000/minute",
    )
    limiter = RateLimiter(uri, key_prefix=prefix)
    limited = RateLimitMiddleware(empty_app, settings=settings, limiter=limiter)
    token = security.create_access_token(settings, user_id=uuid.uuid4(), session_id=uuid.uuid4())
    bearer = [(b"authorization", f"Bearer {token}".encode())]
    me = request_scope("/api/v1/users/me", bearer)
    login = request_scope("/api/v1/auth/login", [(b"content-type", b"application/json")], "POST")
    body = json.dumps({"email": "someone@example.com", "password": "x" * 16}).encode()
    await call(limited, me)
    name = uri.split(":")[0]
    line("GET, no limiter (baseline)", await timed(ROUNDS, lambda i: call(empty_app, me)))
    line(f"GET /users/me, bearer token, {name}", await timed(ROUNDS, lambda i: call(limited, me)))
    line(f"POST /auth/login, JSON body, {name} (2 limits)", await timed(ROUNDS, lambda i: call(limited, login, body)))

    # Loop lag while 64 requests run concurrently, again and again.
    lags: list[float] = []
    stop = False

    async def ticker() -> None:
        while not stop:
            started = time.perf_counter()
            await asyncio.sleep(0)
            lags.append((time.perf_counter() - started) * 1e6)

    await asyncio.gather(*(call(limited, me) for _ in range(64)))  # warm: the pool opens its connections
    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    for _ in range(ROUNDS // 64):
        await asyncio.gather(*(call(limited, me) for _ in range(64)))
    elapsed = time.perf_counter() - started
    stop = True
    await task
    requests = (ROUNDS // 64) * 64
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"{'64 concurrent, ' + name:<58} {requests / elapsed:8.0f} req/s  loop turn p99 {p99:8.1f} us", flush=True)
    await limiter.aclose()


def bench_sync_redis(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    samples = []
    for index in range(ROUNDS):
        started = time.perf_counter()
        client.incr(f"{prefix}:sync:{index % 100}")
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    line("sync redis INCR (slowapi style: blocks the loop this long)", (statistics.median(samples), samples[-20]))
    client.close()


def cleanup(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> int:
    prefix = f"bench-rl-{uuid.uuid4().hex[:8]}"
    uris = ["memory://"]
    if redis_up():
        uris.append(REDIS_URL)
    else:
        print(f"# Redis not reachable at {REDIS_URL}: Redis figures skipped", flush=True)
    try:
        for uri in uris:
            asyncio.run(bench_storage(uri, prefix))
        for uri in uris:
            asyncio.run(bench_middleware(uri, prefix))
        if len(uris) > 1:
            bench_sync_redis(prefix)
    finally:
        if len(uris) > 1:
            cleanup(prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
