"""Multi-factor authentication of own accounts: TOTP enrolment, confirmation, turning it off, and the second
step of a login (``mfa_token`` + a code). The primitives (TOTP, encryption, recovery codes) are app/auth/totp.py.

Every change of a user's MFA state first locks the user's row, so that enrol, confirm and disable of one user
run one after the other. A code is spent by one conditional UPDATE (the factor's ``last_used_step`` moves only
forward; a recovery code's ``used_at`` is set only once), and so is an ``mfa_token`` (``used_at``): of two
concurrent requests with the same code or token exactly one wins, on PostgreSQL and on SQLite. A failure is
written (audit event, the token's failed attempts) and committed before the error answer, which rolls the
request back; a failure has written nothing else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth import service as auth_service
from app.auth import totp
from app.auth.exceptions import (
    InvalidMfaCodeError,
    InvalidMfaLoginCodeError,
    MfaAlreadyEnabledError,
    MfaNotEnabledError,
    MfaNotEnrolledError,
    MfaTokenInvalidError,
)
from app.auth.models import Aal, AuthSession, MfaChallenge, MfaFactor, MfaRecoveryCode, RevokeReason
from app.core import security
from app.core.context import RequestContext
from app.core.data import session_tx
from app.core.db import new_id, utcnow
from app.core.errors import AppError
from app.core.settings import Settings
from app.users import service as user_service


@dataclass(frozen=True, slots=True)
class Enrollment:
    secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class SecondFactor:
    """What the caller proved with: a TOTP code or a recovery code (exactly one is set)."""

    code: str | None = None
    recovery_code: str | None = None


async def _event(
    session: AsyncSession, action: str, *, user_id: uuid.UUID, ip_address: str | None, details: dict[str, Any]
) -> None:
    """An MFA audit event: the user acts on their own account."""
    await audit.record(
        session, action, actor_id=user_id, subject_user_id=user_id, ip_address=ip_address, details=details
    )


async def _factor(session: AsyncSession, user_id: uuid.UUID) -> MfaFactor | None:
    return await session.get(MfaFactor, user_id, populate_existing=True)


async def _set_session_aal(session: AsyncSession, session_id: uuid.UUID, aal: Aal) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id)
        .values(aal=aal)
        .execution_options(synchronize_session=False)
    )


async def _fail(
    session: AsyncSession,
    settings: Settings,
    error: AppError,
    *,
    user_id: uuid.UUID,
    step: str,
    ip_address: str | None,
    challenge_id: uuid.UUID | None = None,
) -> AppError:
    """Write the failure (committed: it must outlive the error answer) and return the error to raise."""
    if challenge_id is not None:
        await _count_failed_attempt(session, settings, challenge_id)
    await _event(
        session, "mfa.failed", user_id=user_id, ip_address=ip_address, details={"step": step, "reason": error.code}
    )
    await session.commit()
    return error


async def _claim(
    session: AsyncSession,
    settings: Settings,
    *,
    factor: MfaFactor,
    proof: SecondFactor,
    ip_address: str | None,
) -> bool:
    """Spend the code if it is right and unused: True for exactly one of any number of concurrent callers."""
    if proof.code is not None:
        secret = totp.decrypt_secret(settings, factor.secret_encrypted)
        step = (
            totp.matching_step(secret, proof.code, now=utcnow(), after=factor.last_used_step)
            if secret is not None
            else None
        )
        if step is None:
            return False
        moved = await session.execute(
            update(MfaFactor)
            .where(
                MfaFactor.user_id == factor.user_id,
                (MfaFactor.last_used_step.is_(None)) | (MfaFactor.last_used_step < step),
            )
            .values(last_used_step=step)
            .execution_options(synchronize_session=False)
        )
        return getattr(moved, "rowcount", 0) == 1
    assert proof.recovery_code is not None
    spent = await session.execute(
        update(MfaRecoveryCode)
        .where(
            MfaRecoveryCode.user_id == factor.user_id,
            MfaRecoveryCode.code_hash == totp.hash_recovery_code(settings, proof.recovery_code),
            MfaRecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(spent, "rowcount", 0) != 1:
        return False
    left = await session.scalar(
        select(MfaRecoveryCode.id)
        .where(MfaRecoveryCode.user_id == factor.user_id, MfaRecoveryCode.used_at.is_(None))
        .limit(1)
    )
    await _event(
        session,
        "mfa.recovery_code_used",
        user_id=factor.user_id,
        ip_address=ip_address,
        details={"codes_left": left is not None},
    )
    return True


# --- enrolment --------------------------------------------------------------------------------------------


async def enroll(session: AsyncSession, settings: Settings, *, user_id: uuid.UUID, current_password: str) -> Enrollment:
    """A new TOTP secret, pending until confirmed; it replaces a pending one. 409 while MFA is on."""
    user = await user_service.lock_user(session_tx(session), user_id)
    await auth_service.check_current_password(user, current_password)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    secret = totp.new_secret()
    await session.execute(delete(MfaFactor).where(MfaFactor.user_id == user.id))
    session.add(MfaFactor(user_id=user.id, secret_encrypted=totp.encrypt_secret(settings, secret), created_at=utcnow()))
    await session.flush()
    return Enrollment(
        secret=secret, otpauth_uri=totp.provisioning_uri(secret, account=user.email, issuer=settings.APP_NAME)
    )


async def confirm(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    code: str,
    ip_address: str | None,
) -> list[str]:
    """Turn MFA on with a first code of the pending secret: new recovery codes (returned once, stored hashed),
    and the caller's session becomes aal2 (it just proved both factors)."""
    user = await user_service.lock_user(session_tx(session), user_id)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    factor = await _factor(session, user.id)
    if factor is None:
        raise MfaNotEnrolledError()
    if not await _claim(session, settings, factor=factor, proof=SecondFactor(code=code), ip_address=ip_address):
        raise await _fail(
            session, settings, InvalidMfaCodeError(), user_id=user.id, step="confirm", ip_address=ip_address
        )
    codes = totp.new_recovery_codes()
    now = utcnow()
    await session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    await session.execute(
        insert(MfaRecoveryCode),
        [
            {"id": new_id(), "user_id": user.id, "code_hash": totp.hash_recovery_code(settings, c), "created_at": now}
            for c in codes
        ],
    )
    await user_service.change_user(session_tx(session), user.id, mfa_enabled=True)
    await _set_session_aal(session, session_id, Aal.AAL2)
    await _event(
        session,
        "mfa.enabled",
        user_id=user.id,
        ip_address=ip_address,
        details={"factor": "totp", "session_id": str(session_id)},
    )
    await session.flush()
    return codes


async def disable(
    session: AsyncSession,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    proof: SecondFactor,
    ip_address: str | None,
) -> list[uuid.UUID]:
    """Turn MFA off with a code or a recovery code: the factor, its recovery codes and pending logins go, every
    other session ends, and the caller's session is aal1 from now on. Returns the ended sessions."""
    tx = session_tx(session)
    user = await user_service.lock_user(tx, user_id)
    factor = await _factor(session, user.id)
    if not user.mfa_enabled or factor is None:
        raise MfaNotEnabledError()
    if not await _claim(session, settings, factor=factor, proof=proof, ip_address=ip_address):
        raise await _fail(
            session, settings, InvalidMfaCodeError(), user_id=user.id, step="disable", ip_address=ip_address
        )
    await session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    await session.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user.id))
    await session.execute(delete(MfaFactor).where(MfaFactor.user_id == user.id))
    await user_service.change_user(tx, user.id, mfa_enabled=False)
    ended = await auth_service.revoke_user_sessions(
        tx, user_id=user.id, reason=RevokeReason.MFA_DISABLED, keep=session_id
    )
    await _set_session_aal(session, session_id, Aal.AAL1)
    await _event(
        session,
        "mfa.disabled",
        user_id=user.id,
        ip_address=ip_address,
        details={
            "factor": "totp",
            "sessions_ended": len(ended),
            "with": "recovery_code" if proof.recovery_code else "code",
        },
    )
    await session.flush()
    return ended


# --- the second step of a login ---------------------------------------------------------------------------


async def _count_failed_attempt(session: AsyncSession, settings: Settings, challenge_id: uuid.UUID) -> None:
    """One more wrong code on a live challenge; the last allowed one spends it. One statement (the right-hand
    side reads the row as it was), so concurrent wrong codes never get more tries than allowed."""
    attempts = MfaChallenge.failed_attempts + 1
    await session.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id, MfaChallenge.used_at.is_(None))
        .values(
            failed_attempts=attempts,
            used_at=case((attempts >= settings.MFA_MAX_FAILED_ATTEMPTS, utcnow()), else_=None),
        )
        .execution_options(synchronize_session=False)
    )


async def verify(
    session: AsyncSession,
    settings: Settings,
    *,
    mfa_token: str,
    proof: SecondFactor,
    client_ip: str | None,
) -> auth_service.IssuedTokens:
    """Complete a login: the challenge named by ``mfa_token`` and a right, unused code start an aal2 session
    with the login's client details. 401 ``mfa_token_invalid`` for a token that is forged, unknown, expired,
    used, or out of tries; 401 ``invalid_code`` for a wrong or replayed code (one try fewer)."""
    parts = security.parse_mfa_token(settings, mfa_token)
    if parts is None:
        raise MfaTokenInvalidError()
    challenge = await session.get(MfaChallenge, parts.challenge_id, populate_existing=True)
    now = utcnow()
    if (
        challenge is None
        or challenge.user_id != parts.user_id
        or challenge.used_at is not None
        or challenge.expires_at <= now
        or challenge.failed_attempts >= settings.MFA_MAX_FAILED_ATTEMPTS
    ):
        raise MfaTokenInvalidError()
    # The user's row first, as enrol/confirm/disable and starting a session take it: one lock order, no deadlock.
    tx = session_tx(session)
    user = await user_service.lock_user(tx, challenge.user_id)
    factor = await _factor(session, challenge.user_id)
    if not user.is_active or not user.mfa_enabled or factor is None:
        raise MfaTokenInvalidError()  # deactivated, or MFA turned off since the password step
    if not await _claim(session, settings, factor=factor, proof=proof, ip_address=client_ip):
        raise await _fail(
            session,
            settings,
            InvalidMfaLoginCodeError(),
            user_id=user.id,
            step="verify",
            ip_address=client_ip,
            challenge_id=challenge.id,
        )
    spent = await session.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge.id, MfaChallenge.used_at.is_(None), MfaChallenge.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise MfaTokenInvalidError()  # a concurrent verify of this token won; the code claimed above rolls back
    await _event(
        session,
        "mfa.verified",
        user_id=user.id,
        ip_address=client_ip,
        details={"with": "recovery_code" if proof.recovery_code else "code"},
    )
    client = RequestContext(ip_address=challenge.ip_address, user_agent=challenge.user_agent)  # the login's
    return await auth_service.start_session(
        tx, settings, user_id=user.id, device_name=challenge.device_name, aal=Aal.AAL2, client=client
    )
