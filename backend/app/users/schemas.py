from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyUrl, BaseModel, ConfigDict, Field, PlainSerializer, UrlConstraints

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
