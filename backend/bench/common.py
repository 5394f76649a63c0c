"""Benchmark plumbing: a fresh migrated database, servers pinned to one core, load from another process.

- Database: PostgreSQL on 127.0.0.1:5432 as ``postgres`` (BENCH_PG_* override); each run creates
  ``bench_<tag>_<pid>``, migrates it with ``alembic upgrade head`` and drops it at the end.
- Servers: ``uvicorn ... --workers 1 --no-access-log`` (uvloop, httptools), pinned with ``taskset`` to the
  first allowed CPU; the load generator gets the second one (no pinning on a single-CPU machine).
- Load: ``wrk -t1 -c32 --latency`` when present (installed with apt-get when we are root and it is missing),
  else ``bench.load`` (raw asyncio HTTP/1.1) in a separate process; stateful loads always use ``bench.load``.
- Everything talks to 127.0.0.1 only and every load run is bounded in time and request count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

BACKEND_DIR = Path(__file__).resolve().parents[1]
PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("BENCH_PG_PASSWORD", "")
SECRET_KEY = "bench-secret-key-that-is-long-enough-0123456789abcdef"
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DURATION = float(os.environ.get("BENCH_DURATION", "6"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MAX_REQUESTS = 2_000_000  # a hard bound on any one load run, whatever the duration

CPUS = sorted(os.sched_getaffinity(0))
PINNING = len(CPUS) >= 2 and shutil.which("taskset") is not None
SERVER_CPU = CPUS[0]
LOAD_CPU = CPUS[1] if len(CPUS) >= 2 else CPUS[0]


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if PINNING else []


def say(line: str) -> None:
    print(line, flush=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


# --- the database -----------------------------------------------------------------------------------------


def pg_dsn(database: str) -> str:
    auth = f"{PG_USER}:{PG_PASSWORD}" if PG_PASSWORD else PG_USER
    return f"postgresql://{auth}@{PG_HOST}:{PG_PORT}/{database}"


def sqlalchemy_url(database: str) -> str:
    return pg_dsn(database).replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=BACKEND_DIR,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@contextlib.contextmanager
def fresh_database(tag: str, *, keep: bool = False) -> Iterator[str]:
    """A new database migrated to head; yields its asyncpg DSN (``postgresql://``)."""
    name = f"bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        migrate(sqlalchemy_url(name))
        yield pg_dsn(name)
    finally:
        if not keep:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- servers ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Any

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The uvicorn process and its children (the worker, when uvicorn forks one)."""
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            pids += [int(pid) for pid in children]
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes so far (threads included)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        return total / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        self.log.seek(0)
        return str(self.log.read().decode(errors="replace"))


def uvicorn_command(target: str, port: int, *, workers: int = 1, factory: bool = True) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", target]
    if factory:
        command.append("--factory")
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    return command


@contextlib.contextmanager
def server(
    command: list[str], port: int, env: dict[str, str], *, ready_path: str = "/health/live", cwd: Path = BACKEND_DIR
) -> Iterator[Server]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below; not a pipe that could fill)
    process = subprocess.Popen(
        pinned(SERVER_CPU) + command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    srv = Server(port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{srv.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(srv.base_url + ready_path, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start within 60 s:\n{srv.log_text()}")
            time.sleep(0.2)
        yield srv
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def app_env(dsn: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "production",
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "SECRET_KEY": SECRET_KEY,
        "RATE_LIMIT_ENABLED": "false",
        "EMAIL_BACKEND": "console",
        "LOG_LEVEL": "WARNING",
        "BACKEND_CORS_ORIGINS": "https://app.example.com",
        **extra,
    }


@contextlib.contextmanager
def app_server(dsn: str, *, cwd: Path = BACKEND_DIR, **extra: str) -> Iterator[Server]:
    """The app; ``cwd`` may name another checkout's backend/ (a before/after comparison in one run)."""
    port = free_port()
    with server(uvicorn_command("app.main:create_app", port), port, app_env(dsn, **extra), cwd=cwd) as srv:
        yield srv


@contextlib.contextmanager
def ceiling_server(dsn: str) -> Iterator[Server]:
    port = free_port()
    command = uvicorn_command("bench.ceiling_app:app", port, factory=False)
    with server(command, port, {"CEILING_DSN": dsn}, ready_path="/live") as srv:
        yield srv


# --- load -------------------------------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_us: float = float("nan")  # server CPU time per answered request, robust to a noisy machine


_WRK: str | bool | None = False  # False: not looked up yet


def wrk_path() -> str | None:
    """wrk, installed from Debian's packages when missing and we may (root); None: use bench.load."""
    global _WRK
    if _WRK is False:
        found = shutil.which("wrk")
        if found is None and os.environ.get("BENCH_NO_INSTALL") is None and os.geteuid() == 0:
            say("# wrk is missing: apt-get install -y wrk")
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "wrk"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=300,
            )
            found = shutil.which("wrk")
        if found is None:
            say("# wrk unavailable: load comes from bench.load (a Python driver; lower ceiling figures)")
        _WRK = found
    return _WRK or None


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string for our ASCII payloads


def _wrk_script(requests: list[Req]) -> str:
    lines = ["local reqs = {}"]
    for i, r in enumerate(requests, start=1):
        headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in r.headers.items())
        body = _lua_string(r.body) if r.body is not None else "nil"
        lines.append(f"reqs[{i}] = wrk.format({_lua_string(r.method)}, {_lua_string(r.path)}, {{{headers}}}, {body})")
    lines += ["local i = 0", "request = function()", "  i = i + 1", "  return reqs[(i % #reqs) + 1]", "end"]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _run_wrk(port: int, requests: list[Req], connections: int, duration: float) -> Result:
    wrk = wrk_path()
    assert wrk is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_wrk_script(requests))
    try:
        command = [*pinned(LOAD_CPU), wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
        command += ["-s", script.name, f"http://127.0.0.1:{port}"]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return Result(rps, p50, p99, total, errors, "wrk")


def run_driver(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {"host": "127.0.0.1", "max_requests": MAX_REQUESTS, **spec}
    timeout = float(spec["duration"]) + 120
    out = subprocess.run(
        [*pinned(LOAD_CPU), sys.executable, "-m", "bench.load"],
        cwd=BACKEND_DIR,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _result(data: dict[str, Any]) -> Result:
    return Result(data["rps"], data["p50_ms"], data["p99_ms"], data["requests"], data["errors"], "bench.load", data)


def load(
    srv: Server,
    requests: list[Req],
    *,
    connections: int = CONNECTIONS,
    duration: float = DURATION,
    warmup: float = WARMUP,
) -> Result:
    """Warm up, then measure ``requests`` (round-robin) at ``connections`` for ``duration`` seconds."""
    use_wrk = wrk_path() is not None
    port = srv.port
    for seconds, measured in ((warmup, False), (duration, True)):
        if seconds <= 0:
            continue
        cpu_before = srv.cpu_seconds()
        if use_wrk:
            result = _run_wrk(port, requests, connections, seconds)
        else:
            spec = {
                "port": port,
                "connections": connections,
                "duration": seconds,
                "requests": [r.__dict__ for r in requests],
            }
            result = _result(run_driver(spec))
        if measured:
            result.cpu_us = (srv.cpu_seconds() - cpu_before) / max(1, result.requests) * 1e6
            return result
    raise ValueError("duration must be positive")


def median_result(results: list[Result]) -> Result:
    """The run with the median throughput (its own latencies, so the figures belong together)."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def figure(label: str, result: Result, *, ceiling: Result | None = None, goal: float | None = None) -> str:
    line = f"{label:<44} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms"
    if result.cpu_us == result.cpu_us:  # not NaN
        line += f"  cpu {result.cpu_us:5.0f} us/req"
    if result.errors:
        line += f"  ERRORS {result.errors}/{result.requests} {result.extra.get('statuses', '')}"
    if ceiling is not None:
        ratio = result.rps / ceiling.rps
        line += f"  = {ratio:.2f}x ceiling"
        if goal is not None:
            line += f" (goal >= {goal:.2f}: {'PASS' if ratio >= goal else 'MISS'})"
    return line


def verdict(label: str, value: float, goal: str, ok: bool) -> str:
    return f"{label:<44} {value:9.2f}  (goal {goal}: {'PASS' if ok else 'MISS'})"


def median(values: list[float]) -> float:
    return statistics.median(values)
