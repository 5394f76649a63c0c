from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    action: str
    actor_id: uuid.UUID | None
    subject_user_id: uuid.UUID | None
    org_id: uuid.UUID | None
    ip_address: str | None
    details: dict[str, Any]
    created_at: datetime
