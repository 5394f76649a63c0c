"""Own accounts: registration, login, refresh-token sessions, revocation, email tokens.

Every write runs in the caller's transaction (``Tx``: a request's ``TxDep``) as Core statements built once
(``Query``), users handed out as frozen ``UserRow``s. Where a request came from (the audit log's address, a new
session's user agent) is the transaction's ``context``. Whatever must survive the error raised next (a failed
login's audit event, a reused refresh token's revocation) is committed first (``tx.commit()``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

from sqlalchemy import ColumnElement, String, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

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
from app.core.context import RequestContext
from app.core.data import Data, Query, Statements, Tx, paged, scalar
from app.core.db import new_id, utcnow
from app.core.settings import Settings
from app.users import service as user_service
from app.users.exceptions import EmailTakenError, ManagedBySupabaseError
from app.users.models import AnyUser, AuthProvider, User, UserRow

_AUTH_SESSIONS = cast(Table, AuthSession.__table__)
_EMAIL_TOKENS = cast(Table, EmailToken.__table__)
_MFA_CHALLENGES = cast(Table, MfaChallenge.__table__)
_USERS = cast(Table, User.__table__)


def _nothing(*_: Any) -> None:
    """The row type of a statement whose rows nobody reads."""


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


def _issue(
    settings: Settings, *, session_id: uuid.UUID, user_id: uuid.UUID, generation: int, salt: str, aal: str
) -> IssuedTokens:
    return IssuedTokens(
        access_token=security.create_access_token(settings, user_id=user_id, session_id=session_id, aal=aal),
        refresh_token=security.derive_refresh_token(settings, session_id=session_id, generation=generation, salt=salt),
        expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
        session_id=session_id,
        user_id=user_id,
    )


def _user_agent(value: str | None) -> str | None:
    return (value or "")[:512] or None


# --- registration and login ---------------------------------------------------------------------------


async def register(tx: Tx, settings: Settings, *, email: str, password: str, full_name: str | None) -> UserRow:
    """A new own account with its profile (and starting credits). Raises EmailTakenError."""
    hashed = await security.hash_password(password)
    user = await user_service.create_user(tx, email=email, hashed_password=hashed, full_name=full_name)
    await user_service.get_or_create_profile(tx, user_id=user.id, full_name=full_name, credits=settings.DEFAULT_CREDITS)
    await audit.record(tx, "user.registered", actor_id=user.id, subject_user_id=user.id)
    return user


async def _login_failed(tx: Tx, *, email: str, reason: str, user_id: uuid.UUID | None = None) -> None:
    await audit.record(tx, "auth.login_failed", subject_user_id=user_id, details={"email": email, "reason": reason})
    await tx.commit()  # the audit event must outlive the 401 (which rolls the request back)


async def authenticate(data: Data | Statements, tx: Tx, *, email: str, password: str) -> UserRow:
    """The user whose email and password match; the same error, in about the same time, otherwise.

    The user is looked up through ``data``, outside the transaction: no pooled connection (and on SQLite no
    write lock) is held through the password verification (argon2 in a thread, queued behind the hashes in
    flight). What the login then writes holds whatever happened meanwhile: the session starts under the user's
    row lock (a deleted account is refused), an upgraded hash replaces only the one just verified."""
    user = await user_service.find_user_by_email(data, email)
    if user is None or user.hashed_password is None:
        await security.verify_dummy_password(password)
        await _login_failed(tx, email=email, reason="unknown")
        raise InvalidCredentialsError()
    ok, new_hash = await security.verify_password(password, user.hashed_password)
    if not ok:
        await _login_failed(tx, email=email, reason="password", user_id=user.id)
        raise InvalidCredentialsError()
    if not user.is_active:
        raise InactiveUserError()
    if new_hash is not None:  # an older (bcrypt) hash is upgraded to argon2 on login
        await user_service.upgrade_password_hash(tx, user.id, verified=user.hashed_password, upgraded=new_hash)
    return user


_NEW_SESSION = Query(insert(_AUTH_SESSIONS), _nothing)  # parameters by column name
_OTHER_LIVE_SESSIONS = (
    select(_AUTH_SESSIONS.c.id)
    .where(
        _AUTH_SESSIONS.c.user_id == bindparam("owner"),
        _AUTH_SESSIONS.c.id != bindparam("keep"),
        _AUTH_SESSIONS.c.revoked_at.is_(None),
        _AUTH_SESSIONS.c.expires_at > bindparam("now"),
    )
    .order_by(_AUTH_SESSIONS.c.last_used_at.desc(), _AUTH_SESSIONS.c.created_at.desc(), _AUTH_SESSIONS.c.id.desc())
)
# At most MAX_SESSIONS_PER_USER live sessions (``keep``, the new one, among them): the least recently used of the
# others (those past the first ``allowed``) end. One statement, under ``users.service.lock_user``.
_END_SESSIONS_OVER_CAP = Query(
    update(_AUTH_SESSIONS)
    .where(_AUTH_SESSIONS.c.id.in_(_OTHER_LIVE_SESSIONS.offset(bindparam("allowed")).scalar_subquery()))
    .values(revoked_at=bindparam("now"), revoked_reason=RevokeReason.SESSION_LIMIT)
    .returning(_AUTH_SESSIONS.c.id),
    scalar,
)


async def start_session(
    tx: Tx,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    device_name: str | None = None,
    aal: Aal = Aal.AAL1,
    client: RequestContext | None = None,
) -> IssuedTokens:
    """A new session of the user, recording ``client`` (default: the request's address and user agent; the
    second step of an MFA login passes its first step's). Beyond MAX_SESSIONS_PER_USER live ones, the least
    recently used ends (two logins racing cannot both keep theirs over the cap: they run one after the other,
    ``lock_user``)."""
    client = client or tx.context
    await user_service.lock_user(tx, user_id)
    now = utcnow()
    session_id, salt = new_id(), security.new_salt()
    await tx.run(
        _NEW_SESSION,
        id=session_id,
        user_id=user_id,
        token_salt=salt,
        generation=0,
        rotated_at=None,
        device_name=device_name,
        user_agent=_user_agent(client.user_agent),
        ip_address=client.ip_address,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
        revoked_at=None,
        revoked_reason=None,
        aal=aal,
    )
    ended = await tx.all(
        _END_SESSIONS_OVER_CAP, owner=user_id, keep=session_id, now=now, allowed=settings.MAX_SESSIONS_PER_USER - 1
    )
    await audit.record(
        tx,
        "auth.login",
        actor_id=user_id,
        subject_user_id=user_id,
        ip_address=client.ip_address,
        details={
            "session_id": str(session_id),
            "device_name": device_name,
            "aal": aal,
            **({"sessions_ended": [str(ended_id) for ended_id in ended]} if ended else {}),
        },
    )
    return _issue(settings, session_id=session_id, user_id=user_id, generation=0, salt=salt, aal=aal)


_NEW_CHALLENGE = Query(insert(_MFA_CHALLENGES), _nothing)  # parameters by column name


async def start_mfa_challenge(
    tx: Tx, settings: Settings, *, user_id: uuid.UUID, device_name: str | None
) -> MfaChallengeIssued:
    """The pending second step of this login (app/auth/mfa.py completes it), holding the login's client."""
    now = utcnow()
    challenge_id = new_id()
    await tx.run(
        _NEW_CHALLENGE,
        id=challenge_id,
        user_id=user_id,
        failed_attempts=0,
        device_name=device_name,
        user_agent=_user_agent(tx.context.user_agent),
        ip_address=tx.context.ip_address,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.MFA_TOKEN_EXPIRE_SECONDS),
        used_at=None,
    )
    return MfaChallengeIssued(
        mfa_token=security.create_mfa_token(settings, challenge_id=challenge_id, user_id=user_id),
        expires_in=settings.MFA_TOKEN_EXPIRE_SECONDS,
    )


async def login(
    data: Data | Statements, tx: Tx, settings: Settings, *, email: str, password: str, device_name: str | None = None
) -> IssuedTokens | MfaChallengeIssued:
    """Tokens for the right password; with MFA on, a challenge instead (the session starts at verify)."""
    user = await authenticate(data, tx, email=email, password=password)
    if user.mfa_enabled:
        return await start_mfa_challenge(tx, settings, user_id=user.id, device_name=device_name)
    return await start_session(tx, settings, user_id=user.id, device_name=device_name)


# --- refresh ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SessionState:
    """A session as a refresh (or a logout by refresh token) reads it, with its user's ``is_active``."""

    user_id: uuid.UUID
    generation: int
    token_salt: str
    aal: str
    rotated_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime
    user_active: bool


_SESSION_STATE = Query(
    select(
        _AUTH_SESSIONS.c.user_id,
        _AUTH_SESSIONS.c.generation,
        _AUTH_SESSIONS.c.token_salt,
        _AUTH_SESSIONS.c.aal,
        _AUTH_SESSIONS.c.rotated_at,
        _AUTH_SESSIONS.c.revoked_at,
        _AUTH_SESSIONS.c.expires_at,
        _USERS.c.is_active,
    )
    .join_from(_AUTH_SESSIONS, _USERS, _USERS.c.id == _AUTH_SESSIONS.c.user_id)
    .where(_AUTH_SESSIONS.c.id == bindparam("session_id")),
    _SessionState,
)
# The rotation: only from the generation the token names, of a live session. Of two concurrent refreshes with
# the same token one updates the row; the other's condition no longer holds once the first commits.
_ROTATE = Query(
    update(_AUTH_SESSIONS)
    .where(
        _AUTH_SESSIONS.c.id == bindparam("session_id"),
        _AUTH_SESSIONS.c.generation == bindparam("seen"),
        _AUTH_SESSIONS.c.revoked_at.is_(None),
    )
    .values(
        generation=_AUTH_SESSIONS.c.generation + 1,
        rotated_at=bindparam("now"),
        last_used_at=bindparam("now"),
        ip_address=func.coalesce(bindparam("ip", type_=String), _AUTH_SESSIONS.c.ip_address),
        user_agent=func.coalesce(bindparam("agent", type_=String), _AUTH_SESSIONS.c.user_agent),
        expires_at=bindparam("expires"),
    )
    .returning(_AUTH_SESSIONS.c.generation),
    scalar,
)


async def _session_of_refresh_token(
    tx: Tx, settings: Settings, token: str
) -> tuple[_SessionState, security.RefreshTokenParts]:
    """The session a refresh token names, once its HMAC matches (any generation up to the current one)."""
    parts = security.parse_refresh_token(token)
    if parts is None:
        raise InvalidRefreshTokenError()
    state = await tx.one(_SESSION_STATE, session_id=parts.session_id)
    if state is None or parts.generation > state.generation:
        raise InvalidRefreshTokenError()
    if not security.refresh_token_matches(
        settings, token, session_id=parts.session_id, generation=parts.generation, salt=state.token_salt
    ):
        raise InvalidRefreshTokenError()
    return state, parts


async def refresh(tx: Tx, settings: Settings, *, token: str) -> IssuedTokens:
    """Rotate a refresh token. Reuse of an older one ends the session (committed before the 401).

    Rotation is one conditional UPDATE (``WHERE generation = :seen``), so two concurrent refreshes with the
    same token cannot both rotate: the loser re-reads and gets the winner's token back (grace window).
    """
    state, parts = await _session_of_refresh_token(tx, settings, token)
    if not state.user_active:  # first: deactivation also ends the sessions (401 inactive_user)
        raise InactiveUserError()
    if state.revoked_at is not None:
        raise SessionRevokedError()
    now = utcnow()
    if state.expires_at <= now:
        raise RefreshTokenExpiredError()
    session_id = parts.session_id

    generation = None
    if parts.generation == state.generation:
        generation = await tx.value(
            _ROTATE,
            session_id=session_id,
            seen=parts.generation,
            now=now,
            ip=tx.context.ip_address or None,
            agent=_user_agent(tx.context.user_agent),
            expires=now + timedelta(days=settings.REFRESH_TOKEN_EXPIRE_DAYS),
        )
        if generation is None:
            # Rotated (or ended) by someone else between our read and our update: read what they committed,
            # and treat the token like one just rotated.
            again = await tx.one(_SESSION_STATE, session_id=session_id)
            if again is None or again.revoked_at is not None:
                raise SessionRevokedError()
            state = again
    if generation is None:
        rotated_at = state.rotated_at
        in_grace = (
            parts.generation == state.generation - 1
            and rotated_at is not None
            and now - rotated_at <= timedelta(seconds=settings.REFRESH_REUSE_GRACE_SECONDS)
        )
        if not in_grace:
            await _end_reused_session(tx, session_id=session_id, user_id=state.user_id, now=now)
        generation = state.generation  # the current token: the one just rotated gets it back
    return _issue(
        settings,
        session_id=session_id,
        user_id=state.user_id,
        generation=generation,
        salt=state.token_salt,
        aal=state.aal,
    )


async def _end_reused_session(tx: Tx, *, session_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> NoReturn:
    """A refresh token of an older generation: someone kept a copy. The whole session ends (committed: it must
    outlive the 401)."""
    await tx.run(_END_SESSION, session_id=session_id, owner=user_id, now=now, reason=RevokeReason.REFRESH_REUSED)
    await audit.record(
        tx, "auth.refresh_token_reused", subject_user_id=user_id, details={"session_id": str(session_id)}
    )
    await tx.commit()  # the revocation must outlive the 401 below
    raise RefreshTokenReusedError()


# --- sessions and revocation --------------------------------------------------------------------------


def _ending(*where: ColumnElement[bool]) -> Query[uuid.UUID]:
    """End the live sessions ``where`` says: ``revoked_at = :now``, ``revoked_reason = :reason``, their ids back."""
    return Query(
        update(_AUTH_SESSIONS)
        .where(*where, _AUTH_SESSIONS.c.revoked_at.is_(None))
        .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
        .returning(_AUTH_SESSIONS.c.id),
        scalar,
    )


_OF_USER = _AUTH_SESSIONS.c.user_id == bindparam("owner")
_END_SESSION = _ending(_AUTH_SESSIONS.c.id == bindparam("session_id"), _OF_USER)
"""One session of a user (no row when it is not theirs or has ended already)."""
_END_USER_SESSIONS = _ending(_OF_USER)
_END_OTHER_SESSIONS = _ending(_OF_USER, _AUTH_SESSIONS.c.id != bindparam("keep"))


async def revoke_user_sessions(
    tx: Tx, *, user_id: uuid.UUID, reason: str, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """End every live session of a user (but ``keep``); returns the ended session ids."""
    if keep is None:
        return await tx.all(_END_USER_SESSIONS, owner=user_id, now=utcnow(), reason=reason)
    return await tx.all(_END_OTHER_SESSIONS, owner=user_id, keep=keep, now=utcnow(), reason=reason)


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
    tx: Tx, *, user_id: uuid.UUID, session_id: uuid.UUID, reason: str, actor_id: uuid.UUID | None = None
) -> None:
    """End one live session of the user: SessionNotFoundError when it is not theirs or has ended already."""
    if await tx.value(_END_SESSION, session_id=session_id, owner=user_id, now=utcnow(), reason=reason) is None:
        raise SessionNotFoundError()
    await audit.record(
        tx,
        "auth.session_revoked" if reason != RevokeReason.LOGOUT else "auth.logout",
        actor_id=actor_id or user_id,
        subject_user_id=user_id,
        details={"session_id": str(session_id), "reason": reason},
    )


async def logout_with_refresh_token(tx: Tx, settings: Settings, *, token: str) -> None:
    """End the session a refresh token names (logout without an access token, e.g. by the refresh cookie).

    The token's HMAC must match its session and generation; it is not rotated. A token of an earlier generation
    also ends the session (presenting it to /auth/refresh would end it too). Idempotent for a session that
    has already ended.
    """
    state, parts = await _session_of_refresh_token(tx, settings, token)
    if state.revoked_at is not None:
        return
    ended = await tx.value(
        _END_SESSION, session_id=parts.session_id, owner=state.user_id, now=utcnow(), reason=RevokeReason.LOGOUT
    )
    if ended is None:  # a concurrent logout ended it first (and recorded it)
        return
    await audit.record(
        tx,
        "auth.logout",
        actor_id=state.user_id,
        subject_user_id=state.user_id,
        details={"session_id": str(parts.session_id), "reason": RevokeReason.LOGOUT, "via": "refresh_token"},
    )


async def logout_all(tx: Tx, *, user_id: uuid.UUID) -> list[uuid.UUID]:
    ended = await revoke_user_sessions(tx, user_id=user_id, reason=RevokeReason.LOGOUT_ALL)
    await audit.record(
        tx, "auth.logout_all", actor_id=user_id, subject_user_id=user_id, details={"sessions": len(ended)}
    )
    return ended


async def check_current_password(user: AnyUser, password: str) -> None:
    """Re-authentication for a sensitive change: 400 ``invalid_password`` unless ``password`` is the user's."""
    if user.hashed_password is None:
        raise WrongPasswordError("This account has no password here; it signs in through Supabase.")
    ok, _ = await security.verify_password(password, user.hashed_password)
    if not ok:
        raise WrongPasswordError()


async def reauthenticate(tx: Tx, *, user: AnyUser, password: str, failed_action: str) -> None:
    """The current password of an own account, asked again before a change that a stolen access token alone
    must not make (email change, account deletion). Wrong: the attempt is audited as ``failed_action`` (committed,
    it must outlive the answer) and 401 ``invalid_credentials``."""
    assert user.hashed_password is not None
    ok, _ = await security.verify_password(password, user.hashed_password)
    if ok:
        return
    await audit.record(tx, failed_action, actor_id=user.id, subject_user_id=user.id, details={"reason": "password"})
    await tx.commit()  # the audit event must outlive the 401 (which rolls the request back)
    raise InvalidCredentialsError("The current password is incorrect.")


async def change_password(
    tx: Tx, *, user_id: uuid.UUID, current_password: str, new_password: str, current_session_id: uuid.UUID | None
) -> list[uuid.UUID]:
    user = await user_service.lock_user(tx, user_id)
    await check_current_password(user, current_password)
    if new_password.strip().lower() == user.email:
        raise WeakPasswordError(field="new_password")
    await user_service.change_user(tx, user.id, hashed_password=await security.hash_password(new_password))
    ended = await revoke_user_sessions(
        tx, user_id=user.id, reason=RevokeReason.PASSWORD_CHANGED, keep=current_session_id
    )
    await audit.record(
        tx, "auth.password_changed", actor_id=user.id, subject_user_id=user.id, details={"sessions_ended": len(ended)}
    )
    return ended


# --- email tokens (verification, password reset) -----------------------------------------------------

_NEW_EMAIL_TOKEN = Query(insert(_EMAIL_TOKENS), _nothing)  # parameters by column name
_UNUSED_OF_USER = (_EMAIL_TOKENS.c.user_id == bindparam("owner"), _EMAIL_TOKENS.c.used_at.is_(None))
_SPEND_TOKENS_OF_PURPOSE = Query(
    update(_EMAIL_TOKENS)
    .where(*_UNUSED_OF_USER, _EMAIL_TOKENS.c.purpose == bindparam("kind"))
    .values(used_at=bindparam("now")),
    _nothing,
)
_SPEND_ALL_TOKENS = Query(update(_EMAIL_TOKENS).where(*_UNUSED_OF_USER).values(used_at=bindparam("now")), _nothing)


@dataclass(frozen=True, slots=True)
class _SpentToken:
    user_id: uuid.UUID
    email: str  # the address it was mailed to


# Spent exactly once: of two racing confirmations one updates the row, the other's condition no longer holds.
_SPEND_TOKEN = Query(
    update(_EMAIL_TOKENS)
    .where(
        _EMAIL_TOKENS.c.token_hash == bindparam("digest"),
        _EMAIL_TOKENS.c.purpose == bindparam("kind"),
        _EMAIL_TOKENS.c.used_at.is_(None),
        _EMAIL_TOKENS.c.expires_at > bindparam("now"),
    )
    .values(used_at=bindparam("now"))
    .returning(_EMAIL_TOKENS.c.user_id, _EMAIL_TOKENS.c.email),
    _SpentToken,
)


async def create_email_token(
    tx: Tx, settings: Settings, *, user: AnyUser, purpose: EmailTokenPurpose, email: str | None = None
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
        await tx.run(_SPEND_TOKENS_OF_PURPOSE, owner=user.id, kind=purpose, now=now)
    token = security.new_secret_token()
    await tx.run(
        _NEW_EMAIL_TOKEN,
        id=new_id(),
        user_id=user.id,
        purpose=purpose,
        token_hash=security.hash_token(token),
        email=email or user.email,
        created_at=now,
        expires_at=now + lifetime,
        used_at=None,
    )
    return token


async def _spend_email_token(tx: Tx, *, token: str, purpose: EmailTokenPurpose) -> tuple[UserRow, str]:
    """Spend a token exactly once: its active user and the address it was mailed to. Unknown, expired or used:
    InvalidEmailTokenError."""
    spent = await tx.one(_SPEND_TOKEN, digest=security.hash_token(token), kind=purpose, now=utcnow())
    if spent is None:
        raise InvalidEmailTokenError()
    user = await user_service.find_user(tx, spent.user_id)
    if user is None or not user.is_active:
        raise InvalidEmailTokenError()
    return user, spent.email


async def consume_email_token(tx: Tx, *, token: str, purpose: EmailTokenPurpose) -> UserRow:
    """Spend a verification or reset token: InvalidEmailTokenError also when it was mailed to an address the
    account no longer has (the token proves nothing about the new one)."""
    user, mailed_to = await _spend_email_token(tx, token=token, purpose=purpose)
    if user.email != mailed_to:
        raise InvalidEmailTokenError()
    return user


def is_own_account(user: AnyUser) -> bool:
    return user.auth_provider == AuthProvider.LOCAL and user.hashed_password is not None


async def request_email_verification(tx: Tx, settings: Settings, *, user: AnyUser) -> str | None:
    """A verification token to mail, or None when there is nothing to verify here (already verified, or an
    account whose email Supabase manages)."""
    if user.is_verified or not is_own_account(user):
        return None
    return await create_email_token(tx, settings, user=user, purpose=EmailTokenPurpose.VERIFY_EMAIL)


async def verify_email(tx: Tx, *, token: str) -> UserRow:
    user = await consume_email_token(tx, token=token, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    verified = await user_service.change_user(tx, user.id, is_verified=True)
    if verified is None:  # deleted meanwhile
        raise InvalidEmailTokenError()
    await audit.record(
        tx, "auth.email_verified", actor_id=user.id, subject_user_id=user.id, details={"email": user.email}
    )
    return verified


async def request_password_reset(tx: Tx, settings: Settings, *, email: str) -> tuple[UserRow, str] | None:
    """(user, token) to mail when ``email`` is an active own account; None otherwise (the caller answers the
    same either way and must not reveal which)."""
    user = await user_service.find_user_by_email(tx, email)
    if user is None or not user.is_active or not is_own_account(user):
        return None
    token = await create_email_token(tx, settings, user=user, purpose=EmailTokenPurpose.PASSWORD_RESET)
    await audit.record(tx, "auth.password_reset_requested", subject_user_id=user.id)
    return user, token


async def reset_password(tx: Tx, *, token: str, new_password: str) -> UserRow:
    """Set a new password with a reset token: the email counts as verified (the mail reached it), every
    session ends (their access and refresh tokens die at once), and any other reset token is spent."""
    user = await consume_email_token(tx, token=token, purpose=EmailTokenPurpose.PASSWORD_RESET)
    if new_password.strip().lower() == user.email:
        raise WeakPasswordError(field="new_password")
    hashed = await security.hash_password(new_password)
    changed = await user_service.change_user(tx, user.id, hashed_password=hashed, is_verified=True)
    if changed is None:  # deleted meanwhile
        raise InvalidEmailTokenError()
    await tx.run(_SPEND_TOKENS_OF_PURPOSE, owner=user.id, kind=EmailTokenPurpose.PASSWORD_RESET, now=utcnow())
    ended = await revoke_user_sessions(tx, user_id=user.id, reason=RevokeReason.PASSWORD_RESET)
    await audit.record(
        tx, "auth.password_reset", actor_id=user.id, subject_user_id=user.id, details={"sessions_ended": len(ended)}
    )
    return changed


# --- email change ---------------------------------------------------------------------------------------


async def request_email_change(
    tx: Tx, settings: Settings, *, user: AnyUser, new_email: str, current_password: str
) -> str:
    """A confirmation token for ``new_email`` (to mail there; the address changes only when it comes back).

    Supabase users: 409 ``managed_by_supabase`` (their address is Supabase's). A wrong password: 401
    ``invalid_credentials`` (a stolen access token alone cannot move the account). An address with an account,
    the caller's own included: 409 ``email_taken``. A new request spends the older change links."""
    if not is_own_account(user):
        raise ManagedBySupabaseError()
    await reauthenticate(tx, user=user, password=current_password, failed_action="user.email_change_failed")
    if new_email == user.email or await user_service.find_user_by_email(tx, new_email) is not None:
        raise EmailTakenError()
    token = await create_email_token(tx, settings, user=user, purpose=EmailTokenPurpose.EMAIL_CHANGE, email=new_email)
    await audit.record(
        tx, "user.email_change_requested", actor_id=user.id, subject_user_id=user.id, details={"email": new_email}
    )
    return token


async def confirm_email_change(tx: Tx, *, token: str, keep_session: uuid.UUID | None) -> tuple[UserRow, str]:
    """Switch to the address the token was mailed to (which that mail proves): the account is verified there,
    every session but ``keep_session`` (the caller's, when the caller is this user) ends, and every other
    pending mail token of the account is spent. Returns the user and the former address.

    400 ``invalid_token`` (unknown, expired, used; single-use under races: one conditional UPDATE), 409
    ``email_taken`` when the address found an account meanwhile."""
    user, new_email = await _spend_email_token(tx, token=token, purpose=EmailTokenPurpose.EMAIL_CHANGE)
    if not is_own_account(user):
        raise InvalidEmailTokenError()
    try:
        changed = await user_service.change_user(tx, user.id, email=new_email, is_verified=True)
    except IntegrityError as exc:  # the unique email: the request rolls back, the token stays unspent
        raise EmailTakenError() from exc
    if changed is None:  # deleted meanwhile
        raise InvalidEmailTokenError()
    await tx.run(_SPEND_ALL_TOKENS, owner=user.id, now=utcnow())
    ended = await revoke_user_sessions(tx, user_id=user.id, reason=RevokeReason.EMAIL_CHANGED, keep=keep_session)
    await audit.record(
        tx,
        "user.email_changed",
        actor_id=user.id,
        subject_user_id=user.id,
        details={"from": user.email, "to": new_email, "sessions_ended": len(ended)},
    )
    return changed, user.email
