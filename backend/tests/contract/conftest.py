"""The frontend contract's Node tooling, shared by the tests that run frontend-contract/ (Node flows, Chromium)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKEND_DIR, missing

FRONTEND_DIR = BACKEND_DIR.parent / "frontend-contract"
NPM_TIMEOUT = 600


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not installed", "the frontend contract flows need Node 20 and npm")
    return path


def run_command(command: list[str], *, cwd: Path, timeout: int, hint: str = "") -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed ({result.returncode}){hint}:\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def frontend_lock() -> Iterator[None]:
    """One xdist worker at a time installs or builds frontend-contract/ (they share its folder)."""
    name = hashlib.sha256(str(FRONTEND_DIR).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"frontend-contract-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, with frontend-contract/ installed (`npm ci` when node_modules is missing)."""
    require_tool("node")
    npm = require_tool("npm")
    with frontend_lock():
        if not (FRONTEND_DIR / "node_modules").is_dir():
            run_command([npm, "ci", "--no-audit", "--no-fund"], cwd=FRONTEND_DIR, timeout=NPM_TIMEOUT)
    return npm


@pytest.fixture(scope="module")
def built_client(npm: str) -> Path:
    """frontend-contract/ compiled to dist/ (tsc: this is also the type check of client, flows and test)."""
    with frontend_lock():
        run_command([npm, "run", "--silent", "build"], cwd=FRONTEND_DIR, timeout=NPM_TIMEOUT)
    return FRONTEND_DIR / "dist" / "test"


def compile_client(npm: str, out_dir: Path) -> Path:
    """frontend-contract/ compiled into a folder of the caller's (dist/ belongs to the Node flows' module)."""
    run_command([npm, "exec", "--", "tsc", "--outDir", str(out_dir)], cwd=FRONTEND_DIR, timeout=NPM_TIMEOUT)
    return out_dir / "src"
