"""Test infrastructure.

- The database: PostgreSQL (127.0.0.1:5432) when ``TEST_DATABASE=postgres`` or when it is reachable and
  ``TEST_DATABASE`` is unset; SQLite with ``TEST_DATABASE=sqlite``. Each xdist worker (and each pytest
  process) gets its own throwaway database, built once with ``alembic upgrade head`` and dropped at the end.
- The app comes from ``create_app()`` with its real lifespan; requests go through ``httpx.AsyncClient`` over
  ``ASGITransport``; nothing is overridden. Rows are deleted after each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import pytest_asyncio
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.db import Base
from app.core.settings import Settings
from app.main import create_app
from app.state import state_of
from tests.documented import check_answer

BACKEND_DIR = Path(__file__).resolve().parents[1]
PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
PG_ADMIN_URL = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def missing(what: str, fix: str) -> NoReturn:
    """A machine tool or service a test needs is absent: a failure in CI (which provides every one of them;
    .ci/run sets CI), a loud skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} and CI requires it")
    pytest.skip(f"{what.upper()}: {fix}")


def require_chromium() -> str:
    """The Debian chromium binary (never a downloaded browser)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing("chromium is not installed", "apt-get install -y chromium to run the browser tests")
    return browser


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def database_kind() -> str:
    wanted = os.environ.get("TEST_DATABASE", "").lower()
    if wanted in {"postgres", "postgresql"}:
        if not _reachable(PG_HOST, PG_PORT):
            raise pytest.UsageError(f"TEST_DATABASE=postgres but PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")
        return "postgres"
    if wanted == "sqlite":
        return "sqlite"
    return "postgres" if _reachable(PG_HOST, PG_PORT) else "sqlite"


DB_KIND = database_kind()


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {DB_KIND}"


def requires_postgres() -> pytest.MarkDecorator:
    return pytest.mark.skipif(DB_KIND != "postgres", reason="needs PostgreSQL (row locks, real parallelism)")


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up (which may call asyncio.run) in a thread: a session loop may already be running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def alembic_upgrade(url: str) -> None:
    cfg = Config(str(BACKEND_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(BACKEND_DIR / "alembic"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


async def _admin(statement: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[str]:
    if DB_KIND == "sqlite":
        path = tmp_path_factory.mktemp("db") / f"test_{worker_id}.db"
        url = f"sqlite+aiosqlite:///{path}"
        in_thread(alembic_upgrade, url)
        yield url
        return
    name = f"test_{worker_id}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    in_thread(asyncio.run, _admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        in_thread(alembic_upgrade, url)
        yield url
    finally:
        in_thread(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def base_settings(database_url: str) -> dict[str, Any]:
    return {
        "_env_file": None,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "RATE_LIMIT_ENABLED": False,
        "EMAIL_BACKEND": "console",
        "DATABASE_POOL_SIZE": 20,
        "DATABASE_MAX_OVERFLOW": 10,
        "GC_TUNING": False,  # process-wide; tests/core/test_heap.py turns it on and back off
    }


def make_settings(base: dict[str, Any], **overrides: Any) -> Settings:
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="session")
def settings(base_settings: dict[str, Any]) -> Settings:
    return make_settings(base_settings)


async def _clean(app: FastAPI) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with state_of(app).engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for name in tables:
                await connection.execute(text(f"DELETE FROM {name}"))  # table names from the metadata, not input


@pytest_asyncio.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(autouse=True)
async def _clean_database(app: FastAPI) -> AsyncIterator[None]:
    """Every test starts from empty tables (whatever app instance it wrote through)."""
    yield
    await _clean(app)


def client_for(application: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    """A client of the app; every error answer it gets is checked against the app's OpenAPI document
    (tests/documented.py: an undocumented status or code fails the test)."""
    transport = httpx.ASGITransport(app=application, client=kwargs.pop("client_addr", ("127.0.0.1", 50000)))

    async def documented_answer(response: httpx.Response) -> None:
        await check_answer(application, response)

    hooks = kwargs.pop("event_hooks", {})
    hooks = {**hooks, "response": [*hooks.get("response", []), documented_answer]}
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks, **kwargs)


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


AppFactory = Callable[..., Awaitable[FastAPI]]


@pytest_asyncio.fixture
async def make_app(base_settings: dict[str, Any]) -> AsyncIterator[AppFactory]:
    """Another app instance (own settings, own engine and pool) on the same database."""
    async with AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> FastAPI:
            application = create_app(make_settings(base_settings, **overrides))
            await stack.enter_async_context(application.router.lifespan_context(application))
            return application

        yield factory


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis (required in CI); outside CI a missing Redis skips loudly."""
    host, port = "127.0.0.1", 6379
    if not _reachable(host, port):
        missing("Redis is not reachable at 127.0.0.1:6379", "this test needs it (it runs in CI)")
    return REDIS_URL
