"""A small HTTP/1.1 load driver on raw asyncio streams (uvloop), run in its own process.

Used when wrk is missing, and for the stateful loads wrk cannot script per connection: refresh chains (each
connection spends the refresh token the previous answer gave it) and a latency probe next to a flood.

    python -m bench.load < spec.json      prints one JSON result line

spec: {"host", "port", "connections", "duration", "max_requests",
       "requests": [{"method", "path", "headers": {...}, "body": "..."}],      round-robin over connections
       "mode": "fixed" | "refresh",                                           refresh: one token per connection
       "refresh_tokens": [...], "probe": {"path", "interval"} (optional)}
Only 127.0.0.1 is allowed; every loop is bounded by both ``duration`` and ``max_requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def build_request(host: str, port: int, method: str, path: str, headers: dict[str, str], body: str | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    data = body.encode() if body is not None else b""
    if body is not None:
        lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if length is None:
        return status, b""
    return status, await reader.readexactly(length)


class Budget:
    def __init__(self, duration: float, max_requests: int) -> None:
        self.deadline = time.perf_counter() + duration
        self.left = max_requests

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def fixed_worker(spec: dict[str, Any], raws: list[bytes], offset: int, budget: Budget, stats: Stats) -> None:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    i = offset
    try:
        while budget.take():
            raw = raws[i % len(raws)]
            i += 1
            start = time.perf_counter()
            writer.write(raw)
            status, _ = await read_response(reader)
            stats.latencies.append(time.perf_counter() - start)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if status >= 400:
                stats.errors += 1
    finally:
        writer.close()


async def refresh_worker(spec: dict[str, Any], token: str, budget: Budget, stats: Stats) -> None:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    headers = {"Content-Type": "application/json", "User-Agent": "bench-load"}
    try:
        while budget.take():
            body = json.dumps({"refresh_token": token})
            raw = build_request(spec["host"], spec["port"], "POST", spec["path"], headers, body)
            start = time.perf_counter()
            writer.write(raw)
            status, data = await read_response(reader)
            stats.latencies.append(time.perf_counter() - start)
            stats.statuses[status] = stats.statuses.get(status, 0) + 1
            if status != 200:
                stats.errors += 1
                return  # the chain is broken: stop rather than hammer with a spent token
            token = json.loads(data)["refresh_token"]
    finally:
        writer.close()


async def probe_worker(spec: dict[str, Any], probe: dict[str, Any], stop: asyncio.Event, stats: Stats) -> None:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    raw = build_request(spec["host"], spec["port"], "GET", probe["path"], {}, None)
    try:
        while not stop.is_set() and len(stats.latencies) < 100_000:
            start = time.perf_counter()
            writer.write(raw)
            status, _ = await read_response(reader)
            stats.latencies.append(time.perf_counter() - start)
            if status != 200:
                stats.errors += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), probe.get("interval", 0.02))
    finally:
        writer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(stats: Stats, elapsed: float) -> dict[str, Any]:
    return {
        "requests": len(stats.latencies),
        "errors": stats.errors,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "seconds": elapsed,
        "rps": len(stats.latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(stats.latencies, 0.50) * 1000,
        "p90_ms": percentile(stats.latencies, 0.90) * 1000,
        "p99_ms": percentile(stats.latencies, 0.99) * 1000,
        "max_ms": max(stats.latencies, default=float("nan")) * 1000,
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["host"] != "127.0.0.1":
        raise SystemExit("bench.load only drives 127.0.0.1")
    budget = Budget(float(spec["duration"]), int(spec.get("max_requests", 1_000_000)))
    stats, probe_stats = Stats(), Stats()
    stop = asyncio.Event()
    probe_task = None
    if spec.get("probe"):
        probe_task = asyncio.create_task(probe_worker(spec, spec["probe"], stop, probe_stats))
    start = time.perf_counter()
    if spec.get("mode") == "refresh":
        workers = [refresh_worker(spec, token, budget, stats) for token in spec["refresh_tokens"]]
    else:
        raws = [
            build_request(spec["host"], spec["port"], r["method"], r["path"], r.get("headers", {}), r.get("body"))
            for r in spec["requests"]
        ]
        workers = [fixed_worker(spec, raws, i, budget, stats) for i in range(int(spec["connections"]))]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    stop.set()
    result = summary(stats, elapsed)
    if probe_task is not None:
        await probe_task
        result["probe"] = summary(probe_stats, elapsed)
    return result


def main() -> None:
    spec = json.load(sys.stdin)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(run(spec))))


if __name__ == "__main__":
    main()
