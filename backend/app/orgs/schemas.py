from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.schemas import Email, StrictModel
from app.orgs.models import OrgRole

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Slug = Annotated[str, Field(min_length=1, max_length=100, pattern=SLUG_PATTERN)]
# No control characters: the name goes into mail subjects and bodies.
OrgName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class OrgCreate(StrictModel):
    name: OrgName
    slug: Slug | None = Field(default=None, description="Generated from the name when absent.")


class OrgUpdate(StrictModel):
    name: OrgName | None = None
    slug: Slug | None = None
    require_mfa: bool | None = Field(
        default=None,
        description="Owners only, calling with an aal2 token: members then need aal2 for everything here but leaving.",
    )


class OrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    require_mfa: bool = Field(
        description="Members need an aal2 token (a second factor) for everything here but leaving."
    )
    created_at: datetime
    updated_at: datetime
    role: OrgRole = Field(description="The caller's role in this organization.")


class MemberRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: OrgRole
    joined_at: datetime


class MembershipRead(MemberRead):
    """A membership as its user sees it (the answer to accepting an invitation)."""

    org_id: uuid.UUID


class UserMembershipRead(BaseModel):
    """One organization of a user, with the user's role (for the admin views)."""

    model_config = ConfigDict(from_attributes=True)

    org_id: uuid.UUID
    name: str
    slug: str
    role: OrgRole
    joined_at: datetime


class MemberCreate(StrictModel):
    email: Email
    role: OrgRole = OrgRole.MEMBER


class MemberRoleUpdate(StrictModel):
    role: OrgRole


class TransferOwnership(StrictModel):
    user_id: uuid.UUID


class InvitationCreate(StrictModel):
    email: Email
    role: OrgRole = OrgRole.MEMBER


class InvitationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: OrgRole
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationRead):
    token: str = Field(description="Shown once: only its hash is stored. Also mailed to the invited address.")


class InvitationAccept(StrictModel):
    token: Annotated[str, Field(min_length=1, max_length=512)]


ApiKeyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class ApiKeyCreate(StrictModel):
    name: ApiKeyName = Field(description="What the key is for (shown in lists and in the audit log).")
    role: Literal[OrgRole.ADMIN, OrgRole.MEMBER] = Field(
        description="The key's role: admin or member (never owner), and never above the creator's own."
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=365, description="Without it the key does not expire.")


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: OrgRole
    prefix: str = Field(description="The visible part of the key (`oak_<prefix>_…`), to tell keys apart.")
    created_by: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Kept to the minute.")


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="Shown once, here: only an HMAC of it is stored. Send as `Authorization: Bearer`.")
