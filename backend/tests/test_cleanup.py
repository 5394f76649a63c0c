"""Retention cleanup (app/cleanup.py): one list of targets, each deleted in short batches through an index."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app import cleanup
from app.audit.models import AuditEvent
from app.auth.models import AuthSession, EmailToken, EmailTokenPurpose, MfaChallenge
from app.core import security
from app.core.db import utcnow
from app.core.settings import Settings
from app.orgs.models import ApiKey, Invitation
from app.state import state_of
from app.users.models import DeletedSupabaseIdentity
from tests.conftest import make_settings
from tests.factories import create_user
from tests.orgs.helpers import make_org


async def ids(app: FastAPI, model: Any) -> set[Any]:
    [key] = model.__table__.primary_key.columns
    async with state_of(app).sessionmaker() as session:
        return set(await session.scalars(select(key)))


async def seed(app: FastAPI) -> dict[str, tuple[list[Any], list[Any]]]:
    """For each table: (rows that must go, rows that must stay)."""
    user = await create_user(app)
    org_id = await make_org(app, user)
    now = utcnow()
    old, recent, future = now - timedelta(days=3), now - timedelta(hours=1), now + timedelta(days=3)

    def session_row(**kw: Any) -> AuthSession:
        return AuthSession(user_id=user.id, token_salt="s", created_at=old, last_used_at=old, **kw)

    def token(i: int, **kw: Any) -> EmailToken:
        purpose = EmailTokenPurpose.VERIFY_EMAIL
        return EmailToken(user_id=user.id, purpose=purpose, token_hash=f"{i:064d}", email=user.email, **kw)

    def invitation(i: int, expires_at: Any) -> Invitation:
        return Invitation(
            org_id=org_id, email=f"i{i}@example.com", role="member", token_hash=f"{i:064x}", expires_at=expires_at
        )

    def api_key(**kw: Any) -> ApiKey:
        prefix = security.new_api_key(state_of(app).settings)[0]
        return ApiKey(
            org_id=org_id, created_by=user.id, name="k", role="member", prefix=prefix, secret_hash="0" * 64, **kw
        )

    def event(created_at: Any) -> AuditEvent:
        return AuditEvent(action="test.event", details={}, created_at=created_at)

    rows: dict[str, tuple[list[Any], list[Any]]] = {
        "sessions": (
            [session_row(expires_at=old), session_row(expires_at=future, revoked_at=old)],
            [session_row(expires_at=future, revoked_at=recent), session_row(expires_at=future)],
        ),
        "tokens": (
            [token(1, created_at=old, expires_at=old), token(2, created_at=old, expires_at=future, used_at=old)],
            [token(3, created_at=now, expires_at=future), token(4, created_at=now, expires_at=future, used_at=recent)],
        ),
        "invitations": ([invitation(1, old)], [invitation(2, future), invitation(3, recent)]),
        "challenges": (
            [MfaChallenge(user_id=user.id, created_at=old, expires_at=old)],
            [MfaChallenge(user_id=user.id, created_at=now, expires_at=future)],
        ),
        "tombstones": (
            [DeletedSupabaseIdentity(supabase_id=uuid.uuid4(), deleted_at=now - timedelta(days=31))],
            [DeletedSupabaseIdentity(supabase_id=uuid.uuid4(), deleted_at=now - timedelta(days=2))],
        ),
        "api keys": (
            [api_key(expires_at=old), api_key(revoked_at=old)],
            [api_key(expires_at=future), api_key(revoked_at=recent), api_key()],
        ),
        "audit": ([event(now - timedelta(days=400))], [event(now - timedelta(days=10))]),
    }
    async with state_of(app).sessionmaker() as session:
        for gone, kept in rows.values():
            session.add_all([*gone, *kept])
        await session.commit()
    return rows


def keys(rows: list[Any]) -> set[Any]:
    return {getattr(row, "supabase_id", None) or row.id for row in rows}


@pytest.mark.asyncio
class TestRun:
    async def test_each_target_deletes_only_what_is_past_its_cutoff(self, app: FastAPI, settings: Settings) -> None:
        rows = await seed(app)
        before = {model: await ids(app, model) for model in (AuthSession, AuditEvent)}
        report = await cleanup.run(state_of(app).engine, settings, batch_size=1)
        for name, model in [
            ("sessions", AuthSession),
            ("tokens", EmailToken),
            ("invitations", Invitation),
            ("challenges", MfaChallenge),
            ("tombstones", DeletedSupabaseIdentity),
            ("api keys", ApiKey),
            ("audit", AuditEvent),
        ]:
            gone, kept = rows[name]
            remaining = await ids(app, model)
            assert not keys(gone) & remaining, name
            assert keys(kept) <= remaining, name
        # Nothing else went: the user's login session and the audit events of the set-up stay.
        assert before[AuthSession] - await ids(app, AuthSession) == keys(rows["sessions"][0])
        assert before[AuditEvent] - await ids(app, AuditEvent) == keys(rows["audit"][0])
        assert report.total == 10
        assert [done.target for done in report.done] == [target.name for target in cleanup.TARGETS]

    async def test_batches(self, app: FastAPI, settings: Settings) -> None:
        user = await create_user(app, logged_in=False)
        old = utcnow() - timedelta(days=3)
        async with state_of(app).sessionmaker() as session:
            session.add_all(MfaChallenge(user_id=user.id, created_at=old, expires_at=old) for _ in range(5))
            await session.commit()
        only = tuple(t for t in cleanup.TARGETS if t.model is MfaChallenge)
        report = await cleanup.run(state_of(app).engine, settings, batch_size=2, targets=only)
        [done] = report.done
        assert (done.deleted, done.batches, len(done.batch_seconds)) == (5, 3, 3)
        assert await ids(app, MfaChallenge) == set()

    async def test_audit_retention_setting(self, app: FastAPI, base_settings: dict[str, Any]) -> None:
        async with state_of(app).sessionmaker() as session:
            session.add(AuditEvent(action="test.event", details={}, created_at=utcnow() - timedelta(days=10)))
            await session.commit()
        short = make_settings(base_settings, AUDIT_RETENTION_DAYS=5)
        only = tuple(t for t in cleanup.TARGETS if t.model is AuditEvent)
        report = await cleanup.run(state_of(app).engine, short, targets=only)
        assert report.total == 1

    async def test_grace(self, app: FastAPI, settings: Settings) -> None:
        user = await create_user(app, logged_in=False)
        async with state_of(app).sessionmaker() as session:
            session.add(MfaChallenge(user_id=user.id, expires_at=utcnow() - timedelta(hours=2)))
            await session.commit()
        only = tuple(t for t in cleanup.TARGETS if t.model is MfaChallenge)
        assert (await cleanup.run(state_of(app).engine, settings, targets=only)).total == 0
        assert (await cleanup.run(state_of(app).engine, settings, grace=timedelta(hours=1), targets=only)).total == 1


class TestTargets:
    def test_every_batch_column_leads_an_index(self) -> None:
        """Each batch is a range scan of an index on its column (python -m bench cleanup shows the plans)."""
        for target in cleanup.TARGETS:
            leading = {index.columns[0].name for index in target.model.__table__.indexes}
            assert target.column in leading, target.name

    def test_default_retention(self) -> None:
        assert Settings(_env_file=None).AUDIT_RETENTION_DAYS == 365
