"""Own accounts: registration, login, refresh-token sessions, revocation, email tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.exceptions import (
    InactiveUserError,
    InvalidCredentialsError,
    InvalidEmailTokenError,
    InvalidRefreshTokenError,
    RefreshTokenExpiredError,
    RefreshTokenReusedError,
    SessionNotFoundError,
    SessionRevokedError,
    WeakPasswordError,
    WrongPasswordError,
)
from app.auth.models import Aal, AuthSession, EmailToken, EmailTokenPurpose, MfaChallenge, RevokeReason
from app.core import security
from app.core.data import Data, Query, Statements, in_session, paged, scalar
from app.core.db import flush_unique, utcnow
from app.core.settings import Settings
from app.users import service as user_service
from app.users.exceptions import EmailTakenError, ManagedBySupabaseError
from app.users.models import AnyUser, AuthProvider, User


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip_address: str | None = None
    user_agent: str | None = None
    device_name: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID
    user_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class MfaChallengeIssued:
    """The answer to a right password when MFA is on: no tokens yet, a token for POST /auth/mfa/verify."""

    mfa_token: str
    expires_in: int


def _issue(settings: Settings, auth_session: AuthSession) -> IssuedTokens:
    return IssuedTokens(
        access_token=security.create_access_token(
            settings, user_id=auth_session.user_id, session_id=auth_session.id, aal=auth_session.aal
        ),
        refresh_token=security.derive_refresh_token(
            settings,
            session_id=auth_session.id,
            generation=auth_session.generation,
            salt=auth_session.token_salt,
        ),
        expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
        session_id=auth_session.id,
        user_id=auth_session.user_id,
    )


# --- registration and login ---------------------------------------------------------------------------


async def register(
    session: AsyncSession, settings: Settings, *, email: str, password: str, full_name: str | None
) -> User:
    """A new own account with its profile (and starting credits). Raises EmailTakenError."""
    hashed = await security.hash_password(password)
    user = await user_service.create_user(session, email=email, hashed_password=hashed, full_name=full_name)
    await user_service.get_or_create_profile(
        in_session(session), user_id=user.id, full_name=full_name or user.full_name, credits=settings.DEFAULT_CREDITS
    )
    await audit.record(session, "user.registered", actor_id=user.id, subject_user_id=user.id)
    return user


async def authenticate(session: AsyncSession, *, email: str, password: str, ip_address: str | None) -> User:
    """The user whose email and password match; the same error, in about the same time, otherwise."""
    user = await user_service.find_user_by_email(session, email)
    if user is None or user.hashed_password is None:
        await security.verify_dummy_password(password)
        await audit.record(
            session, "auth.login_failed", ip_address=ip_address, details={"email": email, "reason": "unknown"}
        )
        await session.commit()  # the audit event must outlive the 401 (which rolls the request back)
        raise InvalidCredentialsError()
    ok, new_hash = await security.verify_password(password, user.hashed_password)
    if not ok:
        await audit.record(
            session,
            "auth.login_failed",
            subject_user_id=user.id,
            ip_address=ip_address,
            details={"email": email, "reason": "password"},
        )
        await session.commit()  # the audit event must outlive the 401 (which rolls the request back)
        raise InvalidCredentialsError()
    if not user.is_active:
        raise InactiveUserError()
    if new_hash is not None:
        user.hashed_password = new_hash  # an older (bcrypt) hash is upgraded to argon2 on login
    return user


async def _end_sessions_over_cap(
    session: AsyncSession, settings: Settings, *, user_id: uuid.UUID, keep: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """At most MAX_SESSIONS_PER_USER live sessions (``keep``, the new one, among them): the least recently
    used of the others end. Call under ``users.service.lock_user``."""
    others = (
        select(AuthSession.id)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.id != keep,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
        .order_by(AuthSession.last_used_at.desc(), AuthSession.created_at.desc(), AuthSession.id.desc())
        .offset(settings.MAX_SESSIONS_PER_USER - 1)
    )
    result = await session.execute(
        update(AuthSession)
        .where(AuthSession.id.in_(others.scalar_subquery()))
        .values(revoked_at=now, revoked_reason=RevokeReason.SESSION_LIMIT)
        .returning(AuthSession.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def start_session(
    session: AsyncSession, settings: Settings, *, user: User, client: ClientInfo, aal: Aal = Aal.AAL1
) -> IssuedTokens:
    """A new session of ``user``; beyond MAX_SESSIONS_PER_USER live ones, the least recently used ends (two
    logins racing cannot both keep theirs over the cap: they run one after the other, ``lock_user``)."""
    await user_service.lock_user(session, user.id)
    now = utcnow()
    auth_session = AuthSession(
        user_id=user.id,
        aal=aal,
        token_salt=security.new_salt(),
        generation=0,
        device_name=client.device_name,
        user_agent=(client.user_agent or "")[:512] or None,
        ip_address=client.ip_address,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
    )
    session.add(auth_session)
    await session.flush()
    ended = await _end_sessions_over_cap(session, settings, user_id=user.id, keep=auth_session.id, now=now)
    await audit.record(
        session,
        "auth.login",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=client.ip_address,
        details={
            "session_id": str(auth_session.id),
            "device_name": client.device_name,
            "aal": aal,
            **({"sessions_ended": [str(ended_id) for ended_id in ended]} if ended else {}),
        },
    )
    return _issue(settings, auth_session)


async def start_mfa_challenge(
    session: AsyncSession, settings: Settings, *, user: User, client: ClientInfo
) -> MfaChallengeIssued:
    """The pending second step of this login (app/auth/mfa.py completes it), holding the login's client."""
    now = utcnow()
    challenge = MfaChallenge(
        user_id=user.id,
        failed_attempts=0,
        device_name=client.device_name,
        user_agent=(client.user_agent or "")[:512] or None,
        ip_address=client.ip_address,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MFA_TOKEN_EXPIRE_SECONDS),
    )
    session.add(challenge)
    await session.flush()
    return MfaChallengeIssued(
        mfa_token=security.create_mfa_token(settings, challenge_id=challenge.id, user_id=user.id),
        expires_in=settings.MFA_TOKEN_EXPIRE_SECONDS,
    )


async def login(
    session: AsyncSession, settings: Settings, *, email: str, password: str, client: ClientInfo
) -> IssuedTokens | MfaChallengeIssued:
    """Tokens for the right password; with MFA on, a challenge instead (the session starts at verify)."""
    user = await authenticate(session, email=email, password=password, ip_address=client.ip_address)
    if user.mfa_enabled:
        return await start_mfa_challenge(session, settings, user=user, client=client)
    return await start_session(session, settings, user=user, client=client)


# --- refresh ------------------------------------------------------------------------------------------


async def _session_of_refresh_token(
    session: AsyncSession, settings: Settings, token: str
) -> tuple[AuthSession, security.RefreshTokenParts]:
    """The session a refresh token names, once its HMAC matches (any generation up to the current one)."""
    parts = security.parse_refresh_token(token)
    if parts is None:
        raise InvalidRefreshTokenError()
    auth_session = await session.get(AuthSession, parts.session_id, populate_existing=True)
    if auth_session is None or parts.generation > auth_session.generation:
        raise InvalidRefreshTokenError()
    if not security.refresh_token_matches(
        settings, token, session_id=auth_session.id, generation=parts.generation, salt=auth_session.token_salt
    ):
        raise InvalidRefreshTokenError()
    return auth_session, parts


async def refresh(session: AsyncSession, settings: Settings, *, token: str, client: ClientInfo) -> IssuedTokens:
    """Rotate a refresh token. Reuse of an older one ends the session (committed before the 401).

    Rotation is one conditional UPDATE (``WHERE generation = :seen``), so two concurrent refreshes with the
    same token cannot both rotate: the loser re-reads and gets the winner's token back (grace window).
    """
    auth_session, parts = await _session_of_refresh_token(session, settings, token)
    user = await session.get(User, auth_session.user_id)
    if user is None or not user.is_active:  # first: deactivation also ends the sessions (401 inactive_user)
        raise InactiveUserError()
    if auth_session.revoked_at is not None:
        raise SessionRevokedError()
    now = utcnow()
    if auth_session.expires_at <= now:
        raise RefreshTokenExpiredError()

    if parts.generation == auth_session.generation:
        result = await session.execute(
            update(AuthSession)
            .where(AuthSession.id == auth_session.id, AuthSession.generation == parts.generation)
            .values(
                generation=parts.generation + 1,
                rotated_at=now,
                last_used_at=now,
                ip_address=client.ip_address or auth_session.ip_address,
                user_agent=(client.user_agent or "")[:512] or auth_session.user_agent,
                expires_at=now + timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
            )
            .execution_options(synchronize_session=False)
        )
        await session.refresh(auth_session)
        if getattr(result, "rowcount", 0) == 1:
            return _issue(settings, auth_session)
        # Someone rotated it between our read and our update: treat like a token just rotated.

    rotated_at = auth_session.rotated_at
    in_grace = (
        parts.generation == auth_session.generation - 1
        and rotated_at is not None
        and now - rotated_at <= timedelta(seconds=settings.REFRESH_REUSE_GRACE_SECONDS)
    )
    if in_grace and auth_session.revoked_at is None:
        return _issue(settings, auth_session)

    await _revoke(session, auth_session, RevokeReason.REFRESH_REUSED, now=now)
    await audit.record(
        session,
        "auth.refresh_token_reused",
        subject_user_id=auth_session.user_id,
        ip_address=client.ip_address,
        details={"session_id": str(auth_session.id)},
    )
    await session.commit()  # the revocation must outlive the 401 below
    raise RefreshTokenReusedError()


# --- sessions and revocation --------------------------------------------------------------------------


async def _revoke(session: AsyncSession, auth_session: AuthSession, reason: str, *, now: datetime) -> None:
    if auth_session.revoked_at is None:
        auth_session.revoked_at = now
        auth_session.revoked_reason = reason
    await session.flush()


async def revoke_user_sessions(
    session: AsyncSession, *, user_id: uuid.UUID, reason: str, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """End every live session of a user (but ``keep``); returns the ended session ids."""
    conditions = [AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)]
    if keep is not None:
        conditions.append(AuthSession.id != keep)
    result = await session.execute(
        update(AuthSession)
        .where(*conditions)
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .returning(AuthSession.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live session as its owner (or an admin) sees it."""

    id: uuid.UUID
    device_name: str | None
    user_agent: str | None
    ip_address: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


_LIVE = (
    AuthSession.user_id == bindparam("user_id"),
    AuthSession.revoked_at.is_(None),
    AuthSession.expires_at > bindparam("now"),
)
_LIVE_SESSIONS = (
    select(
        AuthSession.id,
        AuthSession.device_name,
        AuthSession.user_agent,
        AuthSession.ip_address,
        AuthSession.created_at,
        AuthSession.last_used_at,
        AuthSession.expires_at,
    )
    .where(*_LIVE)
    .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
)
_SESSIONS_COUNT = Query(select(func.count()).select_from(AuthSession).where(*_LIVE), scalar)
_SESSIONS_PAGE = Query(paged(_LIVE_SESSIONS), SessionRow)
_SESSIONS = Query(_LIVE_SESSIONS, SessionRow)


async def list_sessions(data: Data, *, user_id: uuid.UUID, limit: int, offset: int) -> tuple[list[SessionRow], int]:
    """One page of the user's live sessions, newest first, and how many there are (at most
    MAX_SESSIONS_PER_USER, so counting them is cheap)."""
    return await data.page(_SESSIONS_COUNT, _SESSIONS_PAGE, user_id=user_id, now=utcnow(), limit=limit, offset=offset)


async def all_sessions(statements: Statements, *, user_id: uuid.UUID) -> list[SessionRow]:
    """All of the user's live sessions, newest first."""
    return await statements.all(_SESSIONS, user_id=user_id, now=utcnow())


async def revoke_session(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None = None,
    ip_address: str | None = None,
) -> None:
    auth_session = await session.get(AuthSession, session_id)
    if auth_session is None or auth_session.user_id != user_id or auth_session.revoked_at is not None:
        raise SessionNotFoundError()
    await _revoke(session, auth_session, reason, now=utcnow())
    await audit.record(
        session,
        "auth.session_revoked" if reason != RevokeReason.LOGOUT else "auth.logout",
        actor_id=actor_id or user_id,
        subject_user_id=user_id,
        ip_address=ip_address,
        details={"session_id": str(session_id), "reason": reason},
    )


async def logout_with_refresh_token(
    session: AsyncSession, settings: Settings, *, token: str, ip_address: str | None
) -> None:
    """End the session a refresh token names (logout without an access token, e.g. by the refresh cookie).

    The token's HMAC must match its session and generation; it is not rotated. A token of an earlier generation
    also ends the session (presenting it to /auth/refresh would end it too). Idempotent for a session that
    has already ended.
    """
    auth_session, _ = await _session_of_refresh_token(session, settings, token)
    if auth_session.revoked_at is not None:
        return
    await _revoke(session, auth_session, RevokeReason.LOGOUT, now=utcnow())
    await audit.record(
        session,
        "auth.logout",
        actor_id=auth_session.user_id,
        subject_user_id=auth_session.user_id,
        ip_address=ip_address,
        details={"session_id": str(auth_session.id), "reason": RevokeReason.LOGOUT, "via": "refresh_token"},
    )


async def logout_all(session: AsyncSession, *, user_id: uuid.UUID, ip_address: str | None) -> list[uuid.UUID]:
    ended = await revoke_user_sessions(session, user_id=user_id, reason=RevokeReason.LOGOUT_ALL)
    await audit.record(
        session,
        "auth.logout_all",
        actor_id=user_id,
        subject_user_id=user_id,
        ip_address=ip_address,
        details={"sessions": len(ended)},
    )
    return ended


async def check_current_password(user: AnyUser, password: str) -> None:
    """Re-authentication for a sensitive change: 400 ``invalid_password`` unless ``password`` is the user's."""
    if user.hashed_password is None:
        raise WrongPasswordError("This account has no password here; it signs in through Supabase.")
    ok, _ = await security.verify_password(password, user.hashed_password)
    if not ok:
        raise WrongPasswordError()


async def reauthenticate(
    session: AsyncSession, *, user: AnyUser, password: str, failed_action: str, ip_address: str | None
) -> None:
    """The current password of an own account, asked again before a change that a stolen access token alone
    must not make (email change, account deletion). Wrong: the attempt is audited as ``failed_action`` (committed,
    it must outlive the answer) and 401 ``invalid_credentials``."""
    assert user.hashed_password is not None
    ok, _ = await security.verify_password(password, user.hashed_password)
    if ok:
        return
    await audit.record(
        session,
        failed_action,
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"reason": "password"},
    )
    await session.commit()  # the audit event must outlive the 401 (which rolls the request back)
    raise InvalidCredentialsError("The current password is incorrect.")


async def change_password(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    current_password: str,
    new_password: str,
    current_session_id: uuid.UUID | None,
    ip_address: str | None,
) -> list[uuid.UUID]:
    user = await user_service.lock_user(session, user_id)
    await check_current_password(user, current_password)
    if new_password.strip().lower() == user.email:
        raise WeakPasswordError(field="new_password")
    user.hashed_password = await security.hash_password(new_password)
    ended = await revoke_user_sessions(
        session, user_id=user.id, reason=RevokeReason.PASSWORD_CHANGED, keep=current_session_id
    )
    await audit.record(
        session,
        "auth.password_changed",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"sessions_ended": len(ended)},
    )
    return ended


# --- email tokens (verification, password reset) -----------------------------------------------------


async def _spend_email_tokens(session: AsyncSession, *, user_id: uuid.UUID, purpose: EmailTokenPurpose) -> None:
    await session.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user_id, EmailToken.purpose == purpose, EmailToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def create_email_token(
    session: AsyncSession, settings: Settings, *, user: AnyUser, purpose: EmailTokenPurpose, email: str | None = None
) -> str:
    """A single-use token mailed to ``email`` (default ``user.email``; 256 bits, only its SHA-256 is stored).

    A new reset or email-change token spends the older ones of its purpose. Verification tokens may coexist
    (each names the address it was mailed to, so one for an older address never verifies a changed one).
    """
    now = utcnow()
    if purpose == EmailTokenPurpose.VERIFY_EMAIL:
        lifetime = timedelta(hours=settings.EMAIL_VERIFY_EXPIRE_HOURS)
    else:
        hours = (
            settings.PASSWORD_RESET_EXPIRE_HOURS
            if purpose == EmailTokenPurpose.PASSWORD_RESET
            else settings.EMAIL_CHANGE_EXPIRE_HOURS
        )
        lifetime = timedelta(hours=hours)
        await _spend_email_tokens(session, user_id=user.id, purpose=purpose)
    token = security.new_secret_token()
    session.add(
        EmailToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=security.hash_token(token),
            email=email or user.email,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    await session.flush()
    return token


async def _spend_email_token(session: AsyncSession, *, token: str, purpose: EmailTokenPurpose) -> tuple[User, str]:
    """Spend a token exactly once (a conditional UPDATE, so two racing confirmations cannot both win): its
    active user and the address it was mailed to. Unknown, expired or used: InvalidEmailTokenError."""
    now = utcnow()
    result = await session.execute(
        update(EmailToken)
        .where(
            EmailToken.token_hash == security.hash_token(token),
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
            EmailToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(EmailToken.user_id, EmailToken.email)
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    if row is None:
        raise InvalidEmailTokenError()
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise InvalidEmailTokenError()
    return user, row.email


async def consume_email_token(session: AsyncSession, *, token: str, purpose: EmailTokenPurpose) -> User:
    """Spend a verification or reset token: InvalidEmailTokenError also when it was mailed to an address the
    account no longer has (the token proves nothing about the new one)."""
    user, mailed_to = await _spend_email_token(session, token=token, purpose=purpose)
    if user.email != mailed_to:
        raise InvalidEmailTokenError()
    return user


def is_own_account(user: AnyUser) -> bool:
    return user.auth_provider == AuthProvider.LOCAL and user.hashed_password is not None


async def request_email_verification(session: AsyncSession, settings: Settings, *, user: AnyUser) -> str | None:
    """A verification token to mail, or None when there is nothing to verify here (already verified, or an
    account whose email Supabase manages)."""
    if user.is_verified or not is_own_account(user):
        return None
    return await create_email_token(session, settings, user=user, purpose=EmailTokenPurpose.VERIFY_EMAIL)


async def verify_email(session: AsyncSession, *, token: str, ip_address: str | None) -> User:
    user = await consume_email_token(session, token=token, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    user.is_verified = True
    await audit.record(
        session,
        "auth.email_verified",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"email": user.email},
    )
    await session.flush()
    return user


async def request_password_reset(
    session: AsyncSession, settings: Settings, *, email: str, ip_address: str | None
) -> tuple[User, str] | None:
    """(user, token) to mail when ``email`` is an active own account; None otherwise (the caller answers the
    same either way and must not reveal which)."""
    user = await user_service.find_user_by_email(session, email)
    if user is None or not user.is_active or not is_own_account(user):
        return None
    token = await create_email_token(session, settings, user=user, purpose=EmailTokenPurpose.PASSWORD_RESET)
    await audit.record(session, "auth.password_reset_requested", subject_user_id=user.id, ip_address=ip_address)
    return user, token


async def reset_password(session: AsyncSession, *, token: str, new_password: str, ip_address: str | None) -> User:
    """Set a new password with a reset token: the email counts as verified (the mail reached it), every
    session ends (their access and refresh tokens die at once), and any other reset token is spent."""
    user = await consume_email_token(session, token=token, purpose=EmailTokenPurpose.PASSWORD_RESET)
    if new_password.strip().lower() == user.email:
        raise WeakPasswordError(field="new_password")
    user.hashed_password = await security.hash_password(new_password)
    user.is_verified = True
    await _spend_email_tokens(session, user_id=user.id, purpose=EmailTokenPurpose.PASSWORD_RESET)
    ended = await revoke_user_sessions(session, user_id=user.id, reason=RevokeReason.PASSWORD_RESET)
    await audit.record(
        session,
        "auth.password_reset",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"sessions_ended": len(ended)},
    )
    await session.flush()
    return user


# --- email change ---------------------------------------------------------------------------------------


async def request_email_change(
    session: AsyncSession,
    settings: Settings,
    *,
    user: AnyUser,
    new_email: str,
    current_password: str,
    ip_address: str | None,
) -> str:
    """A confirmation token for ``new_email`` (to mail there; the address changes only when it comes back).

    Supabase users: 409 ``managed_by_supabase`` (their address is Supabase's). A wrong password: 401
    ``invalid_credentials`` (a stolen access token alone cannot move the account). An address with an account,
    the caller's own included: 409 ``email_taken``. A new request spends the older change links."""
    if not is_own_account(user):
        raise ManagedBySupabaseError()
    await reauthenticate(
        session, user=user, password=current_password, failed_action="user.email_change_failed", ip_address=ip_address
    )
    if new_email == user.email or await user_service.find_user_by_email(session, new_email) is not None:
        raise EmailTakenError()
    token = await create_email_token(
        session, settings, user=user, purpose=EmailTokenPurpose.EMAIL_CHANGE, email=new_email
    )
    await audit.record(
        session,
        "user.email_change_requested",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"email": new_email},
    )
    return token


async def confirm_email_change(
    session: AsyncSession, *, token: str, keep_session: uuid.UUID | None, ip_address: str | None
) -> tuple[User, str]:
    """Switch to the address the token was mailed to (which that mail proves): the account is verified there,
    every session but ``keep_session`` (the caller's, when the caller is this user) ends, and every other
    pending mail token of the account is spent. Returns the user and the former address.

    400 ``invalid_token`` (unknown, expired, used; single-use under races: one conditional UPDATE), 409
    ``email_taken`` when the address found an account meanwhile."""
    user, new_email = await _spend_email_token(session, token=token, purpose=EmailTokenPurpose.EMAIL_CHANGE)
    if not is_own_account(user):
        raise InvalidEmailTokenError()
    old_email = user.email
    user.email, user.is_verified = new_email, True
    if not await flush_unique(session):
        raise EmailTakenError()
    for purpose in EmailTokenPurpose:
        await _spend_email_tokens(session, user_id=user.id, purpose=purpose)
    ended = await revoke_user_sessions(session, user_id=user.id, reason=RevokeReason.EMAIL_CHANGED, keep=keep_session)
    await audit.record(
        session,
        "user.email_changed",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=ip_address,
        details={"from": old_email, "to": new_email, "sessions_ended": len(ended)},
    )
    return user, old_email
