from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import StrictModel
from app.users.schemas import UserRead


class AdminUserRead(UserRead):
    updated_at: datetime


class AdminUserOrg(BaseModel):
    org_id: uuid.UUID
    name: str
    slug: str
    role: str


class AdminUserDetail(AdminUserRead):
    organizations: list[AdminUserOrg]
    balance: int = Field(description="The user's credit balance (0 without a profile).")
    credits: int = Field(description="The same balance, under the profile's field name.")


class AdminUserUpdate(StrictModel):
    is_active: bool | None = None
    is_superuser: bool | None = None
    full_name: Annotated[str | None, Field(max_length=255)] = None


class AdminOrgRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime
    member_count: int
