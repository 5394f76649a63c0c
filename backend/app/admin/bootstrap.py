"""The first superuser: made to exist (active, superuser) on start, once, however many workers start at once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.audit import service as audit
from app.auth import service as auth_service
from app.auth.models import RevokeReason
from app.auth.passwords import password_problem
from app.core import security
from app.core.data import Data, Query, Tx, scalar
from app.core.emails import normalize_email
from app.core.settings import Settings
from app.users import service as user_service
from app.users.exceptions import EmailTakenError
from app.users.models import AuthProvider, UserRow

logger = logging.getLogger("app.admin.bootstrap")

# pg_advisory_xact_lock key shared by every process that creates or promotes superusers at start.
BOOTSTRAP_LOCK_KEY = 7346002
SQLITE_ATTEMPTS = 5


class BootstrapError(RuntimeError):
    """The first superuser could not be made to exist; the app refuses to start."""


@dataclass(frozen=True, slots=True)
class SuperuserResult:
    user: UserRow
    created: bool
    promoted: bool


_LOCK = Query(text(f"SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK_KEY})"), scalar)


async def ensure_superuser(tx: Tx, *, email: str, password: str, credits: int, actor: str) -> SuperuserResult:
    """Create (with a profile) or promote and reactivate. A verified existing user keeps their password; an
    unverified one is taken over by the configuration (docs/SECURITY.md).

    On PostgreSQL it first takes a transaction-scoped advisory lock so that concurrent starters run one after
    the other; the unique email is the second guard (and SQLite's only one).
    """
    if tx.postgresql:
        await tx.run(_LOCK)
    email = normalize_email(email)
    user = await user_service.find_user_by_email(tx, email)
    created = False
    if user is None:
        hashed = await security.hash_password(password)
        try:
            user = await user_service.create_user(
                tx, email=email, hashed_password=hashed, is_verified=True, is_superuser=True
            )
            created = True
        except EmailTakenError:
            # Another process inserted it between our read and our insert (it inserted nothing): promote theirs.
            user = await user_service.find_user_by_email(tx, email)
            if user is None:  # pragma: no cover - deleted again in between
                raise
    promoted = not created and not (user.is_superuser and user.is_active)
    claimed = not created and not user.is_verified
    if claimed:
        # Anyone may have registered this address before the operator configured it, without proving the
        # mailbox: that person must not become the superuser. The operator's configuration is the proof, so
        # the account takes the configured password, every session of it ends, it counts as verified, and an
        # unverified Supabase identity linked to it is unlinked (its tokens would still sign in otherwise).
        changes = {
            "hashed_password": await security.hash_password(password),
            "is_verified": True,
            "supabase_id": None,
            "auth_provider": AuthProvider.LOCAL,
        }
        await auth_service.revoke_user_sessions(tx, user_id=user.id, reason=RevokeReason.ADMIN)
    else:
        changes = {}
    if promoted or claimed:
        changed = await user_service.change_user(tx, user.id, **changes, is_superuser=True, is_active=True)
        assert changed is not None  # read in this transaction, after the lock
        user = changed
    await user_service.get_or_create_profile(tx, user_id=user.id, full_name=user.full_name, credits=credits)
    if created or promoted or claimed:
        await audit.record(
            tx,
            "admin.superuser_created" if created else "admin.superuser_promoted",
            subject_user_id=user.id,
            details={"email": email, "by": actor, **({"password_reset": True} if claimed else {})},
        )
    return SuperuserResult(user=user, created=created, promoted=promoted)


async def _run(data: Data, settings: Settings, *, email: str, password: str) -> SuperuserResult:
    for attempt in range(1, SQLITE_ATTEMPTS + 1):
        try:
            async with data.transaction() as tx:  # no request: NO_CONTEXT (the audit event has no address)
                return await ensure_superuser(
                    tx, email=email, password=password, credits=settings.DEFAULT_CREDITS, actor="bootstrap"
                )
        except OperationalError as exc:
            # SQLite has no advisory locks: a writer that lost the race ("database is locked") tries again.
            if not settings.is_sqlite or "locked" not in str(exc).lower() or attempt == SQLITE_ATTEMPTS:
                raise
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def bootstrap_first_superuser(data: Data, settings: Settings) -> SuperuserResult | None:
    """FIRST_SUPERUSER_EMAIL / FIRST_SUPERUSER_PASSWORD -> that user exists, is active and a superuser.

    Does nothing unless both are set. Any failure is logged loudly and raised as BootstrapError, so the
    app does not start half-configured.
    """
    email, password = settings.FIRST_SUPERUSER_EMAIL, settings.FIRST_SUPERUSER_PASSWORD
    if not email or not password:
        if email or password:
            logger.warning("first superuser: set both FIRST_SUPERUSER_EMAIL and FIRST_SUPERUSER_PASSWORD; skipped")
        return None
    problem = password_problem(password, email=email)
    if problem:
        if settings.is_production:
            logger.error("first superuser bootstrap FAILED: FIRST_SUPERUSER_PASSWORD is refused: %s", problem)
            raise BootstrapError(f"FIRST_SUPERUSER_PASSWORD is refused: {problem}")
        logger.warning("first superuser: FIRST_SUPERUSER_PASSWORD is weak (%s); refused in production", problem)
    try:
        result = await _run(data, settings, email=email, password=password)
    except Exception as exc:
        logger.error(
            "first superuser bootstrap FAILED for %s (%s); refusing to start", email, type(exc).__name__, exc_info=exc
        )
        raise BootstrapError(f"first superuser bootstrap failed: {type(exc).__name__}") from exc
    if result.created:
        logger.info("first superuser %s created", result.user.email)
    elif result.promoted:
        logger.info("first superuser %s promoted to an active superuser", result.user.email)
    else:
        logger.info("first superuser %s already in place", result.user.email)
    return result
