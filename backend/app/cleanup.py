"""Retention: what ``make cleanup`` / ``python -m app cleanup`` deletes, in one list (docs/OPERATIONS.md).

Each target names a table, an indexed time column and the cutoff before which a row goes. A target is emptied
in batches: ``DELETE FROM t WHERE pk IN (SELECT pk FROM t WHERE column < :cutoff ORDER BY column LIMIT n)``
(on PostgreSQL ``pk = ANY(ARRAY(SELECT ...))``, so that the rows are fetched by their primary key),
each in a transaction of its own that ends before the next begins, so no lock is held for long and requests go
on being served; the inner ``SELECT`` is one range scan of the column's index (``python -m bench cleanup``
shows the plans on millions of rows). On PostgreSQL it also says ``FOR UPDATE SKIP LOCKED``: a row a request
holds is left for the next run, never waited for, and two cleanups running at once (cron on several hosts)
share the work instead of queueing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Delete, Select, any_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.models import AuditEvent
from app.auth.models import AuthSession, EmailToken, MfaChallenge
from app.core.db import utcnow
from app.core.settings import Settings
from app.orgs.models import ApiKey, Invitation
from app.users.models import DeletedSupabaseIdentity

BATCH_SIZE = 1000
DEFAULT_GRACE = timedelta(days=1)
"""Dead rows (expired, revoked, used) go once dead for this long: a refresh token reused shortly after its
session ended is still recognised (401 ``session_revoked``), and support can see what just happened."""

TOMBSTONE_DAYS = 30
"""Tombstones of deleted Supabase users (app/users/lifecycle.py) matter only while a Supabase access token
issued before the deletion can still be valid: Supabase's default lifetime is 1 hour."""


@dataclass(frozen=True, slots=True)
class Cutoffs:
    now: datetime
    grace: timedelta
    audit_retention: timedelta

    @property
    def dead(self) -> datetime:
        return self.now - self.grace

    @property
    def tombstones(self) -> datetime:
        return self.now - timedelta(days=TOMBSTONE_DAYS)

    @property
    def audit(self) -> datetime:
        return self.now - self.audit_retention


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    model: Any
    column: str  # indexed: the batch is a range scan of its index
    cutoff: Callable[[Cutoffs], datetime]

    @property
    def _key(self) -> Any:
        [key] = self.model.__table__.primary_key.columns
        return key

    def batch(self, cutoff: datetime, size: int, *, postgresql: bool) -> Delete:
        column = getattr(self.model, self.column)
        chosen: Select[Any] = select(self._key).where(column < cutoff).order_by(column).limit(size)
        if not postgresql:
            return delete(self.model).where(self._key.in_(chosen.scalar_subquery()))
        # ``= ANY(ARRAY(SELECT ...))``: the chosen keys become one array, and the rows are fetched by their
        # primary key index. With ``IN (SELECT ...)`` the planner may hash the batch and scan the whole table.
        chosen = chosen.with_for_update(skip_locked=True)
        return delete(self.model).where(self._key == any_(func.array(chosen.scalar_subquery())))


# THE list: everything the app deletes on a schedule. Rows with ``column < cutoff`` go.
TARGETS: tuple[Target, ...] = (
    Target("expired sessions", AuthSession, "expires_at", lambda c: c.dead),
    Target("revoked sessions", AuthSession, "revoked_at", lambda c: c.dead),
    Target("expired email tokens", EmailToken, "expires_at", lambda c: c.dead),
    Target("used email tokens", EmailToken, "used_at", lambda c: c.dead),
    Target("expired invitations", Invitation, "expires_at", lambda c: c.dead),
    Target("expired MFA challenges", MfaChallenge, "expires_at", lambda c: c.dead),
    Target("expired API keys", ApiKey, "expires_at", lambda c: c.dead),
    Target("revoked API keys", ApiKey, "revoked_at", lambda c: c.dead),
    Target(
        "old Supabase tombstones",
        DeletedSupabaseIdentity,
        "deleted_at",
        lambda c: c.now - timedelta(days=TOMBSTONE_DAYS),
    ),
    Target("old audit events", AuditEvent, "created_at", lambda c: c.audit),
)


@dataclass
class Done:
    target: str
    deleted: int = 0
    batches: int = 0
    batch_seconds: list[float] = field(default_factory=list)


@dataclass
class Report:
    done: list[Done]

    @property
    def total(self) -> int:
        return sum(item.deleted for item in self.done)


async def run(
    engine: AsyncEngine,
    settings: Settings,
    *,
    grace: timedelta = DEFAULT_GRACE,
    batch_size: int = BATCH_SIZE,
    pause: float = 0.0,
    now: datetime | None = None,
    targets: tuple[Target, ...] = TARGETS,
) -> Report:
    """Empty every target of what is past its cutoff, ``batch_size`` rows per short transaction (``pause``
    seconds between two batches). Returns what went, per target, with each batch's duration."""
    cutoffs = Cutoffs(now=now or utcnow(), grace=grace, audit_retention=timedelta(days=settings.AUDIT_RETENTION_DAYS))
    postgresql = engine.dialect.name == "postgresql"
    report = Report(done=[])
    for target in targets:
        done = Done(target.name)
        statement = target.batch(target.cutoff(cutoffs), batch_size, postgresql=postgresql)
        while True:
            started = time.perf_counter()
            async with engine.begin() as connection:
                result = await connection.execute(statement)
            done.batch_seconds.append(time.perf_counter() - started)
            deleted = int(getattr(result, "rowcount", 0) or 0)
            done.deleted += deleted
            done.batches += 1
            if deleted < batch_size:
                break
            if pause:
                await asyncio.sleep(pause)
        report.done.append(done)
    return report
