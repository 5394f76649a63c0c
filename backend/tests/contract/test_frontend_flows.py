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
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.contract.conftest import FRONTEND_DIR, NPM_TIMEOUT, require_tool, run_command
from tests.core.uvicorn_server import uvicorn_server

SUPABASE_JWT_SECRET = "frontend-flows-supabase-secret-0123456789abcdef"
SUPABASE_URL = "http://127.0.0.1:9/"  # never contacted: HS256 tokens need no JWKS; it fixes the issuer
NODE_TEST_TIMEOUT = 300


def test_generated_types_match_openapi_json(npm: str) -> None:
    run_command(
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
        [require_tool("node"), "--test", "--test-reporter=spec", str(built_client) + os.sep],
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
