"""``python -m app <command>``: ``serve`` (the default), ``create-superuser``, ``cleanup`` (app/cleanup.py)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from datetime import timedelta

from app import cleanup as retention
from app.admin.bootstrap import SuperuserResult, ensure_superuser
from app.auth.passwords import password_problem
from app.core.data import Data
from app.core.db import create_engine
from app.core.driver import Driver
from app.core.settings import Settings, load_settings


async def create_superuser(settings: Settings, *, email: str, password: str) -> SuperuserResult:
    """Create the user as an active, verified superuser (with a profile), or promote and reactivate them.

    An existing user's password is left as it is.
    """
    engine = create_engine(settings)
    driver = None
    try:
        driver = await Driver.create(engine, settings)
        async with Data(engine, driver).transaction() as tx:
            return await ensure_superuser(
                tx, email=email, password=password, credits=settings.DEFAULT_CREDITS, actor="cli"
            )
    finally:
        if driver is not None:
            await driver.close()
        await engine.dispose()


async def cleanup(
    settings: Settings,
    *,
    older_than: timedelta = retention.DEFAULT_GRACE,
    batch_size: int = retention.BATCH_SIZE,
    pause: float = 0.0,
) -> retention.Report:
    """Delete what is past its retention (app/cleanup.py: one list of targets), in short batches."""
    engine = create_engine(settings)
    try:
        return await retention.run(engine, settings, grace=older_than, batch_size=batch_size, pause=pause)
    finally:
        await engine.dispose()


def serve() -> None:
    import uvicorn

    settings = load_settings()
    uvicorn.run("app.main:create_app", factory=True, host=settings.HOST, port=settings.PORT, proxy_headers=False)


def _ask_password(email: str) -> str:
    while True:
        password = getpass.getpass("Password: ")
        problem = password_problem(password, email=email)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            continue
        if getpass.getpass("Password (again): ") != password:
            print("error: the passwords do not match", file=sys.stderr)
            continue
        return password


def _create_superuser_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    email = (args.email or settings.FIRST_SUPERUSER_EMAIL or "").strip()
    if not email:
        email = input("Email: ").strip()
    if not email or "@" not in email:
        print("error: a valid --email is required", file=sys.stderr)
        return 2
    password = args.password
    if password is None:
        password = _ask_password(email)
    else:
        problem = password_problem(password, email=email)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    result = asyncio.run(create_superuser(settings, email=email, password=password))
    if result.created:
        print(f"created superuser {result.user.email} ({result.user.id})")
    elif result.promoted:
        print(f"promoted {result.user.email} ({result.user.id}) to an active superuser; password unchanged")
    else:
        print(f"{result.user.email} ({result.user.id}) already is an active superuser; password unchanged")
    return 0


def _cleanup_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    report = asyncio.run(
        cleanup(
            settings,
            older_than=timedelta(hours=args.older_than_hours),
            batch_size=args.batch_size,
            pause=args.pause_ms / 1000,
        )
    )
    print(f"deleted {report.total} rows (audit events older than {settings.AUDIT_RETENTION_DAYS} days)")
    for done in report.done:
        slowest = max(done.batch_seconds, default=0.0) * 1000
        print(f"  {done.target}: {done.deleted} in {done.batches} batches (slowest {slowest:.0f} ms)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Run the API, or an operator command.")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve the API on HOST:PORT (the default)")
    create = commands.add_parser("create-superuser", help="create or promote a superuser")
    create.add_argument("--email", help="defaults to FIRST_SUPERUSER_EMAIL, else asked")
    create.add_argument("--password", help="asked (hidden) when not given; unused for an existing user")
    clean = commands.add_parser(
        "cleanup",
        help="delete expired/revoked sessions, spent tokens, expired invitations and MFA challenges, old audit events",
    )
    clean.add_argument(
        "--older-than-hours", type=float, default=24.0, help="only rows dead for at least this long (default 24)"
    )
    clean.add_argument(
        "--batch-size", type=int, default=retention.BATCH_SIZE, help="rows per transaction (default 1000)"
    )
    clean.add_argument("--pause-ms", type=float, default=0.0, help="sleep between two batches (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "create-superuser":
        return _create_superuser_command(args)
    if args.command == "cleanup":
        return _cleanup_command(args)
    serve()
    return 0
