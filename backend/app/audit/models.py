from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, new_id, utcnow


class AuditEvent(Base):
    """Append-only. No foreign keys: events outlive the users and organizations they describe."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_created_at", "created_at"),
        Index("ix_audit_events_org_id_created_at", "org_id", "created_at"),
        Index("ix_audit_events_actor_id_created_at", "actor_id", "created_at"),
        Index("ix_audit_events_subject_user_id_created_at", "subject_user_id", "created_at"),
        Index("ix_audit_events_action_created_at", "action", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    action: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    # The organization API key that acted (actor_id is then the key's creator); None for a person.
    actor_api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    subject_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    org_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
