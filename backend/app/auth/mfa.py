"""Multi-factor authentication of own accounts: TOTP enrolment, confirmation, turning it off, and the second
step of a login (``mfa_token`` + a code). The primitives (TOTP, encryption, recovery codes) are app/auth/totp.py.

Everything runs in the caller's transaction (``Tx``: the request's ``TxDep``) as Core statements built once;
the audit events take the request's address from it. Every change of a user's MFA state first locks the user's
row (``users.service.lock_user``), so that enrol, confirm and disable of one user run one after the other. A
code is spent by one conditional UPDATE (the factor's ``last_used_step`` moves only forward; a recovery code's
``used_at`` is set only once), and so is an ``mfa_token`` (``used_at``): of two concurrent requests with the same
code or token exactly one wins, on PostgreSQL and on SQLite. A failure is written (audit event, the token's
failed attempts) and committed before the error answer, which rolls the request back; a failure has written
nothing else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Integer, bindparam, case, delete, insert, or_, select, update

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
from app.core.data import Query, Tx, scalar
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


@dataclass(frozen=True, slots=True)
class _Factor:
    user_id: uuid.UUID
    secret_encrypted: str
    last_used_step: int | None


@dataclass(frozen=True, slots=True)
class _Challenge:
    id: uuid.UUID
    user_id: uuid.UUID
    failed_attempts: int
    device_name: str | None
    user_agent: str | None
    ip_address: str | None
    expires_at: datetime
    used_at: datetime | None


def _nothing(*_: Any) -> None:
    """The row type of a statement whose rows nobody reads."""


# Bind names other than the column names of the table a statement changes (SQLAlchemy reserves those).
_OWNER: BindParameter[uuid.UUID] = bindparam("owner")
_FACTOR = Query(
    select(MfaFactor.user_id, MfaFactor.secret_encrypted, MfaFactor.last_used_step).where(MfaFactor.user_id == _OWNER),
    _Factor,
)
_DROP_FACTOR = Query(delete(MfaFactor).where(MfaFactor.user_id == _OWNER), _nothing)
_NEW_FACTOR = Query(
    insert(MfaFactor).values(user_id=_OWNER, secret_encrypted=bindparam("secret"), created_at=bindparam("now")),
    _nothing,
)
# The step moves only forward: of two requests with one code, the second matches no row.
_STEP_FORWARD = Query(
    update(MfaFactor)
    .where(
        MfaFactor.user_id == _OWNER,
        or_(MfaFactor.last_used_step.is_(None), MfaFactor.last_used_step < bindparam("step")),
    )
    .values(last_used_step=bindparam("step"))
    .returning(MfaFactor.user_id),
    scalar,
)
_SPEND_RECOVERY_CODE = Query(
    update(MfaRecoveryCode)
    .where(
        MfaRecoveryCode.user_id == _OWNER,
        MfaRecoveryCode.code_hash == bindparam("hash"),
        MfaRecoveryCode.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
    .returning(MfaRecoveryCode.id),
    scalar,
)
_RECOVERY_CODE_LEFT = Query(
    select(MfaRecoveryCode.id).where(MfaRecoveryCode.user_id == _OWNER, MfaRecoveryCode.used_at.is_(None)).limit(1),
    scalar,
)
_DROP_RECOVERY_CODES = Query(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == _OWNER), _nothing)
# One multi-row INSERT of a set of recovery codes (always RECOVERY_CODE_COUNT of them). The parameters carry their
# column's type: SQLAlchemy types only the first row's from the columns.
_CODE_COLUMNS = MfaRecoveryCode.__table__.c
_NEW_RECOVERY_CODES = Query(
    insert(MfaRecoveryCode).values(
        [
            {
                "id": bindparam(f"id_{i}", type_=_CODE_COLUMNS.id.type),
                "user_id": bindparam("owner", type_=_CODE_COLUMNS.user_id.type),
                "code_hash": bindparam(f"hash_{i}", type_=_CODE_COLUMNS.code_hash.type),
                "created_at": bindparam("now", type_=_CODE_COLUMNS.created_at.type),
            }
            for i in range(totp.RECOVERY_CODE_COUNT)
        ]
    ),
    _nothing,
)
_DROP_CHALLENGES = Query(delete(MfaChallenge).where(MfaChallenge.user_id == _OWNER), _nothing)
_SET_SESSION_AAL = Query(
    update(AuthSession).where(AuthSession.id == bindparam("session_id")).values(aal=bindparam("set_aal")), _nothing
)
_CHALLENGE = Query(
    select(
        MfaChallenge.id,
        MfaChallenge.user_id,
        MfaChallenge.failed_attempts,
        MfaChallenge.device_name,
        MfaChallenge.user_agent,
        MfaChallenge.ip_address,
        MfaChallenge.expires_at,
        MfaChallenge.used_at,
    ).where(MfaChallenge.id == bindparam("challenge_id")),
    _Challenge,
)
# One more wrong code on a live challenge; the last allowed one spends it. One statement (the right-hand side
# reads the row as it was), so concurrent wrong codes never get more tries than allowed.
_ATTEMPTS = MfaChallenge.failed_attempts + 1
_COUNT_FAILED_ATTEMPT = Query(
    update(MfaChallenge)
    .where(MfaChallenge.id == bindparam("challenge_id"), MfaChallenge.used_at.is_(None))
    .values(
        failed_attempts=_ATTEMPTS,
        used_at=case(
            (bindparam("allowed", type_=Integer) <= _ATTEMPTS, bindparam("now", type_=MfaChallenge.used_at.type)),
            else_=None,
        ),
    ),
    _nothing,
)
_SPEND_CHALLENGE = Query(
    update(MfaChallenge)
    .where(
        MfaChallenge.id == bindparam("challenge_id"),
        MfaChallenge.used_at.is_(None),
        MfaChallenge.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
    .returning(MfaChallenge.id),
    scalar,
)


async def _event(tx: Tx, action: str, *, user_id: uuid.UUID, details: dict[str, Any]) -> None:
    """An MFA audit event: the user acts on their own account."""
    await audit.record(tx, action, actor_id=user_id, subject_user_id=user_id, details=details)


async def _fail(
    tx: Tx,
    settings: Settings,
    error: AppError,
    *,
    user_id: uuid.UUID,
    step: str,
    challenge_id: uuid.UUID | None = None,
) -> AppError:
    """Write the failure (committed: it must outlive the error answer) and return the error to raise."""
    if challenge_id is not None:
        await tx.run(
            _COUNT_FAILED_ATTEMPT, challenge_id=challenge_id, allowed=settings.MFA_MAX_FAILED_ATTEMPTS, now=utcnow()
        )
    await _event(tx, "mfa.failed", user_id=user_id, details={"step": step, "reason": error.code})
    await tx.commit()
    return error


async def _claim(tx: Tx, settings: Settings, *, factor: _Factor, proof: SecondFactor) -> bool:
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
        return await tx.value(_STEP_FORWARD, owner=factor.user_id, step=step) is not None
    assert proof.recovery_code is not None
    code_hash = totp.hash_recovery_code(settings, proof.recovery_code)
    if await tx.value(_SPEND_RECOVERY_CODE, owner=factor.user_id, hash=code_hash, now=utcnow()) is None:
        return False
    left = await tx.value(_RECOVERY_CODE_LEFT, owner=factor.user_id)
    await _event(tx, "mfa.recovery_code_used", user_id=factor.user_id, details={"codes_left": left is not None})
    return True


# --- enrolment --------------------------------------------------------------------------------------------


async def enroll(tx: Tx, settings: Settings, *, user_id: uuid.UUID, current_password: str) -> Enrollment:
    """A new TOTP secret, pending until confirmed; it replaces a pending one. 409 while MFA is on."""
    user = await user_service.lock_user(tx, user_id)
    await auth_service.check_current_password(user, current_password)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    secret = totp.new_secret()
    await tx.run(_DROP_FACTOR, owner=user.id)
    await tx.run(_NEW_FACTOR, owner=user.id, secret=totp.encrypt_secret(settings, secret), now=utcnow())
    return Enrollment(
        secret=secret, otpauth_uri=totp.provisioning_uri(secret, account=user.email, issuer=settings.APP_NAME)
    )


async def confirm(tx: Tx, settings: Settings, *, user_id: uuid.UUID, session_id: uuid.UUID, code: str) -> list[str]:
    """Turn MFA on with a first code of the pending secret: new recovery codes (returned once, stored hashed),
    and the caller's session becomes aal2 (it just proved both factors)."""
    user = await user_service.lock_user(tx, user_id)
    if user.mfa_enabled:
        raise MfaAlreadyEnabledError()
    factor = await tx.one(_FACTOR, owner=user.id)
    if factor is None:
        raise MfaNotEnrolledError()
    if not await _claim(tx, settings, factor=factor, proof=SecondFactor(code=code)):
        raise await _fail(tx, settings, InvalidMfaCodeError(), user_id=user.id, step="confirm")
    codes = totp.new_recovery_codes()
    await tx.run(_DROP_RECOVERY_CODES, owner=user.id)
    await tx.run(
        _NEW_RECOVERY_CODES,
        owner=user.id,
        now=utcnow(),
        **{f"id_{i}": new_id() for i in range(len(codes))},
        **{f"hash_{i}": totp.hash_recovery_code(settings, c) for i, c in enumerate(codes)},
    )
    await user_service.change_user(tx, user.id, mfa_enabled=True)
    await tx.run(_SET_SESSION_AAL, session_id=session_id, set_aal=Aal.AAL2)
    await _event(tx, "mfa.enabled", user_id=user.id, details={"factor": "totp", "session_id": str(session_id)})
    return codes


async def disable(
    tx: Tx, settings: Settings, *, user_id: uuid.UUID, session_id: uuid.UUID, proof: SecondFactor
) -> list[uuid.UUID]:
    """Turn MFA off with a code or a recovery code: the factor, its recovery codes and pending logins go, every
    other session ends, and the caller's session is aal1 from now on. Returns the ended sessions."""
    user = await user_service.lock_user(tx, user_id)
    factor = await tx.one(_FACTOR, owner=user.id)
    if not user.mfa_enabled or factor is None:
        raise MfaNotEnabledError()
    if not await _claim(tx, settings, factor=factor, proof=proof):
        raise await _fail(tx, settings, InvalidMfaCodeError(), user_id=user.id, step="disable")
    await tx.run(_DROP_RECOVERY_CODES, owner=user.id)
    await tx.run(_DROP_CHALLENGES, owner=user.id)
    await tx.run(_DROP_FACTOR, owner=user.id)
    await user_service.change_user(tx, user.id, mfa_enabled=False)
    ended = await auth_service.revoke_user_sessions(
        tx, user_id=user.id, reason=RevokeReason.MFA_DISABLED, keep=session_id
    )
    await tx.run(_SET_SESSION_AAL, session_id=session_id, set_aal=Aal.AAL1)
    await _event(
        tx,
        "mfa.disabled",
        user_id=user.id,
        details={
            "factor": "totp",
            "sessions_ended": len(ended),
            "with": "recovery_code" if proof.recovery_code else "code",
        },
    )
    return ended


# --- the second step of a login ---------------------------------------------------------------------------


async def verify(tx: Tx, settings: Settings, *, mfa_token: str, proof: SecondFactor) -> auth_service.IssuedTokens:
    """Complete a login: the challenge named by ``mfa_token`` and a right, unused code start an aal2 session
    with the login's client details. 401 ``mfa_token_invalid`` for a token that is forged, unknown, expired,
    used, or out of tries; 401 ``invalid_code`` for a wrong or replayed code (one try fewer)."""
    parts = security.parse_mfa_token(settings, mfa_token)
    if parts is None:
        raise MfaTokenInvalidError()
    challenge = await tx.one(_CHALLENGE, challenge_id=parts.challenge_id)
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
    user = await user_service.lock_user(tx, challenge.user_id)
    factor = await tx.one(_FACTOR, owner=challenge.user_id)
    if not user.is_active or not user.mfa_enabled or factor is None:
        raise MfaTokenInvalidError()  # deactivated, or MFA turned off since the password step
    if not await _claim(tx, settings, factor=factor, proof=proof):
        raise await _fail(
            tx, settings, InvalidMfaLoginCodeError(), user_id=user.id, step="verify", challenge_id=challenge.id
        )
    if await tx.value(_SPEND_CHALLENGE, challenge_id=challenge.id, now=now) is None:
        raise MfaTokenInvalidError()  # a concurrent verify of this token won; the code claimed above rolls back
    await _event(
        tx, "mfa.verified", user_id=user.id, details={"with": "recovery_code" if proof.recovery_code else "code"}
    )
    login_client = RequestContext(ip_address=challenge.ip_address, user_agent=challenge.user_agent)
    return await auth_service.start_session(
        tx, settings, user_id=user.id, device_name=challenge.device_name, aal=Aal.AAL2, client=login_client
    )
