from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, PlainSerializer, UrlConstraints

from app.audit.schemas import AuditEventRead
from app.auth.schemas import PasswordIn
from app.core.schemas import Email, StrictModel
from app.users.models import AuthProvider


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    is_verified: bool
    auth_provider: AuthProvider
    created_at: datetime
    mfa_enabled: bool = Field(description="TOTP is on: logins need a second step (POST /auth/mfa/verify).")


class UserMe(UserRead):
    aal: Literal["aal1", "aal2"] = Field(
        description="The assurance level of the caller's token: aal2 when its sign-in used a second factor."
    )


class UserUpdate(StrictModel):
    """The name only: the email changes through POST /users/me/email (so ``email`` here is a 422)."""

    full_name: Annotated[str | None, Field(max_length=255)] = None


class EmailChangeRequest(StrictModel):
    email: Email
    current_password: PasswordIn


class EmailChangeConfirm(StrictModel):
    token: Annotated[str, Field(min_length=1, max_length=512)]


class ProfileRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    full_name: str | None
    avatar_url: str | None
    credits: int
    created_at: datetime
    updated_at: datetime


# http(s) only (no javascript:, data:), and no longer than the column; dumped as the string the column stores.
AvatarUrl = Annotated[
    AnyUrl,
    UrlConstraints(max_length=2048, allowed_schemes=["http", "https"], host_required=True),
    PlainSerializer(str),
]


class ProfileCreate(StrictModel):
    full_name: Annotated[str | None, Field(max_length=255)] = None


class ProfileUpdate(StrictModel):
    full_name: Annotated[str | None, Field(max_length=255)] = None
    avatar_url: AvatarUrl | None = None


class AccountDelete(StrictModel):
    """Re-authentication for ``DELETE /users/me``: the current password of an own account. Supabase users send
    no body (or ``{}``): their token must have been issued in the last 5 minutes instead."""

    current_password: PasswordIn | None = None


# --- the account export (GET /users/me/export): documents the streamed JSON; tests validate it ------------


class _Export(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportUser(UserRead):
    model_config = ConfigDict(extra="forbid")

    supabase_id: uuid.UUID | None
    updated_at: datetime


class ExportProfile(_Export):
    full_name: str | None
    avatar_url: str | None
    credits: int
    created_at: datetime
    updated_at: datetime


class ExportMfa(_Export):
    enabled: bool
    enrolled_at: datetime | None
    recovery_codes_left: int


class ExportMembership(_Export):
    org_id: uuid.UUID
    name: str
    slug: str
    role: str
    joined_at: datetime


class ExportInvitation(_Export):
    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    role: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None


class ExportApiKey(_Export):
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    role: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ExportSession(_Export):
    id: uuid.UUID
    device_name: str | None
    user_agent: str | None
    ip_address: str | None
    aal: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


class ExportLedgerEntry(_Export):
    id: uuid.UUID
    amount: int
    balance_after: int
    reason: str
    actor_id: uuid.UUID | None
    idempotency_key: str | None
    created_at: datetime


class ExportAuditEvent(AuditEventRead):
    model_config = ConfigDict(extra="forbid")


class AccountExport(_Export):
    """Everything kept about the caller, oldest first within each list. No password hash, token, token hash,
    MFA secret or recovery code is ever part of it."""

    format: Literal["organizations-api/account-export"]
    version: Literal[1]
    exported_at: datetime
    user: ExportUser
    profile: ExportProfile | None
    mfa: ExportMfa
    memberships: list[ExportMembership]
    invitations_sent: list[ExportInvitation]
    api_keys_created: list[ExportApiKey] = Field(description="Organization API keys the caller created (never a key).")
    sessions: list[ExportSession] = Field(description="This API's sessions, live and ended (until cleanup).")
    credit_ledger: list[ExportLedgerEntry]
    audit_events: list[ExportAuditEvent] = Field(
        description="Events the caller did (actor), then events about the caller done by others (subject)."
    )
