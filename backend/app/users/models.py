from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, new_id, utcnow


class AuthProvider(StrEnum):
    LOCAL = "local"
    SUPABASE = "supabase"


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    hashed_password: Mapped[str | None] = mapped_column(String(255), default=None)
    full_name: Mapped[str | None] = mapped_column(String(255), default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    is_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    auth_provider: Mapped[str] = mapped_column(String(20), default=AuthProvider.LOCAL)
    # The Supabase user (token `sub`) this account answers to: equal to `id` for users provisioned from a
    # Supabase token, another UUID for a local account merged on a verified email (docs/SUPABASE.md).
    supabase_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True, index=True, default=None)
    # TOTP confirmed (app/auth/mfa.py): login then needs a second step. Read with the caller on every request.
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user as reads hand it out (the caller on every request, app/auth/identity.py): a frozen value, not an
    ORM object, so nothing written to it can be silently lost. A change goes through a service's statement."""

    id: uuid.UUID
    email: str
    hashed_password: str | None
    full_name: str | None
    is_active: bool
    is_superuser: bool
    is_verified: bool
    auth_provider: str
    supabase_id: uuid.UUID | None
    mfa_enabled: bool
    created_at: datetime
    updated_at: datetime


AnyUser = User | UserRow
"""For code that only reads a user's attributes: the caller (a row) or a user loaded in a session."""

USER_COLUMNS = tuple(User.__table__.columns)
"""The columns of ``users`` in the order of UserRow's fields (checked at import)."""
if tuple(column.key for column in USER_COLUMNS) != tuple(field.name for field in fields(UserRow)):
    raise TypeError("UserRow's fields must be the columns of users, in table order")


class Profile(Base):
    """One per user (id = the user's id); holds the credit balance the ledger explains."""

    __tablename__ = "profiles"
    __table_args__ = (CheckConstraint("credits >= 0", name="credits_non_negative"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    full_name: Mapped[str | None] = mapped_column(String(255), default=None)
    avatar_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    credits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeletedSupabaseIdentity(Base):
    """A tombstone: the Supabase user (token ``sub``) whose account here was deleted, and when.

    A Supabase access token stays valid until it expires, whatever happens here; without this row the next
    request with a token issued before the deletion would provision the account again (app/auth/supabase.py).
    Tokens issued before ``deleted_at`` are refused (401 ``account_deleted``); a token issued afterwards (the
    person signed in again) may create a new account. Cleanup drops tombstones after TOMBSTONE_DAYS.
    """

    __tablename__ = "deleted_supabase_identities"
    __table_args__ = (Index("ix_deleted_supabase_identities_deleted_at", "deleted_at"),)

    supabase_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
