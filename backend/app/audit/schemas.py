from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None = Field(
        default=None, description="The organization API key that acted; actor_id is then the key's creator."
    )
    subject_user_id: uuid.UUID | None
    org_id: uuid.UUID | None
    ip_address: str | None
    details: dict[str, Any]
    created_at: datetime
