from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, new_id, utcnow


class RevokeReason(StrEnum):
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    SESSION_DELETED = "session_deleted"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    REFRESH_REUSED = "refresh_token_reused"
    USER_DEACTIVATED = "user_deactivated"
    ADMIN = "admin"
    USER_DELETED = "user_deleted"
    EMAIL_CHANGED = "email_changed"
    SESSION_LIMIT = "session_limit"  # MAX_SESSIONS_PER_USER: a newer login ended the least recently used
    MFA_DISABLED = "mfa_disabled"


class Aal(StrEnum):
    """Authenticator assurance level (NIST SP 800-63B): aal1 = a password (or one factor), aal2 = two factors."""

    AAL1 = "aal1"
    AAL2 = "aal2"


class AuthSession(Base):
    """A login on one device. The refresh token is never stored: it is re-derived (HMAC with SECRET_KEY)
    from the session id, its ``generation`` and a per-session ``token_salt``; a database reader can't."""

    __tablename__ = "auth_sessions"
    __table_args__ = (
        Index("ix_auth_sessions_user_id_created_at", "user_id", "created_at"),
        Index("ix_auth_sessions_expires_at", "expires_at"),
        Index("ix_auth_sessions_revoked_at", "revoked_at"),  # cleanup (app/cleanup.py)
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    token_salt: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    device_name: Mapped[str | None] = mapped_column(String(255), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    # What this session's login proved; its access tokens carry it. Raised to aal2 by confirming a new TOTP
    # factor in it, lowered to aal1 when MFA is turned off in it.
    aal: Mapped[str] = mapped_column(String(4), default=Aal.AAL1, server_default=text("'aal1'"))


class EmailTokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"
    EMAIL_CHANGE = "email_change"  # ``email`` is the new address, the one the token was mailed to


class EmailToken(Base):
    """Single-use verification and reset tokens, stored as SHA-256 hashes only."""

    __tablename__ = "email_tokens"
    __table_args__ = (
        Index("ix_email_tokens_user_id_purpose", "user_id", "purpose"),
        Index("ix_email_tokens_expires_at", "expires_at"),  # cleanup (app/cleanup.py)
        Index("ix_email_tokens_used_at", "used_at"),  # cleanup
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class MfaFactor(Base):
    """A user's TOTP factor (at most one). MFA is on when ``users.mfa_enabled`` is; until then the row is a
    pending enrolment, replaced by the next one. The secret is encrypted (app/auth/totp.py)."""

    __tablename__ = "mfa_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(String(255))
    # The last TOTP time step accepted: a code is accepted only for a later step (no replay).
    last_used_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MfaRecoveryCode(Base):
    """Single-use recovery codes: only a keyed hash of each is stored."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (Index("ix_mfa_recovery_codes_user_id_code_hash", "user_id", "code_hash", unique=True),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class MfaChallenge(Base):
    """The second step of one login: what the ``mfa_token`` names. Single-use, short-lived, a few tries; it
    keeps the login's client details so that the session it starts is that login's."""

    __tablename__ = "mfa_challenges"
    __table_args__ = (
        Index("ix_mfa_challenges_user_id", "user_id"),
        Index("ix_mfa_challenges_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    device_name: Mapped[str | None] = mapped_column(String(255), default=None)
    user_agent: Mapped[str | None] = mapped_column(String(512), default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
