"""The frontend contract proven by a real client: the TypeScript flows of frontend-contract/ run in Node
against this API served by uvicorn (a subprocess on a free loopback port).

The server runs on this worker's test database (migrated by alembic; PostgreSQL or SQLite like the rest of the
suite), with rate limits off, Supabase HS256 tokens accepted (the Node test mints them with the same secret)
and AUTH_REFRESH_COOKIE=true, so that both the body and the cookie refresh modes are exercised.

Node and npm are needed: outside CI a missing one skips this test loudly; in CI (env CI set) it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.conftest import BACKEND_DIR
from tests.core.uvicorn_server import uvicorn_server

FRONTEND_DIR = BACKEND_DIR.parent / "frontend-contract"
SUPABASE_JWT_SECRET = "frontend-flows-supabase-secret-0123456789abcdef"
SUPABASE_URL = "http://127.0.0.1:9/"  # never contacted: HS256 tokens need no JWKS; it fixes the issuer
NPM_TIMEOUT = 600
NODE_TEST_TIMEOUT = 300


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} NOT FOUND: the frontend contract flows (Node 20 + npm) cannot run"
        if os.environ.get("CI"):
            pytest.fail(message + " and CI requires them")
        pytest.skip(message)
    return path


def _run(command: list[str], *, cwd: Path, timeout: int, hint: str = "") -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed ({result.returncode}){hint}:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, with frontend-contract/ installed (`npm ci` when node_modules is missing)."""
    _require("node")
    npm = _require("npm")
    if not (FRONTEND_DIR / "node_modules").is_dir():
        _run([npm, "ci", "--no-audit", "--no-fund"], cwd=FRONTEND_DIR, timeout=NPM_TIMEOUT)
    return npm


@pytest.fixture(scope="module")
def built_client(npm: str) -> Path:
    """frontend-contract/ compiled to dist/ (tsc: this is also the type check of client, flows and test)."""
    _run([npm, "run", "--silent", "build"], cwd=FRONTEND_DIR, timeout=NPM_TIMEOUT)
    return FRONTEND_DIR / "dist" / "test"


def test_generated_types_match_openapi_json(npm: str) -> None:
    _run(
        [npm, "run", "--silent", "check-generated"],
        cwd=FRONTEND_DIR,
        timeout=NPM_TIMEOUT,
        hint=": frontend-contract/src/schema.d.ts is out of date, run `make contract` and commit it",
    )


SERVER_ENV = {
    "EMAIL_BACKEND": "console",
    "AUTH_REFRESH_COOKIE": "true",
    "SUPABASE_JWT_SECRET": SUPABASE_JWT_SECRET,
    "SUPABASE_URL": SUPABASE_URL,
}


@pytest.fixture
def api_url(database_url: str, app: FastAPI) -> Iterator[str]:
    """The real app under uvicorn; `app` is requested so that the rows the flows made are cleaned after."""
    with uvicorn_server(database_url, workers=1, **SERVER_ENV) as url:
        yield url


def test_client_flows_against_the_running_api(built_client: Path, api_url: str) -> None:
    env = {
        **os.environ,
        "API_URL": api_url,
        "SUPABASE_JWT_SECRET": SUPABASE_JWT_SECRET,
        "SUPABASE_URL": SUPABASE_URL,
        "API_REFRESH_COOKIE": "true",
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [_require("node"), "--test", "--test-reporter=spec", str(built_client) + os.sep],
        cwd=FRONTEND_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TEST_TIMEOUT,
        check=False,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # the spec reporter may colour
    assert result.returncode == 0, f"node --test failed against {api_url}:\n{output}"
    summary = dict(re.findall(r"^\S*\s*(tests|pass|fail|skipped) (\d+)$", output, re.MULTILINE))
    assert summary.get("fail") == "0" and int(summary.get("pass", "0")) > 0, output
    assert summary.get("skipped") == "0", f"a flow was skipped:\n{output}"
