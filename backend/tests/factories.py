"""Test data made through the services (real hashes, real sessions), committed like a request would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from app.auth import service as auth_service
from app.core import security
from app.core.context import RequestContext
from app.state import state_of
from app.users import service as user_service
from app.users.models import User

DEFAULT_PASSWORD = "Correct-Horse-Battery-42"
_HASHES: dict[str, str] = {}


async def password_hash(password: str = DEFAULT_PASSWORD) -> str:
    if password not in _HASHES:
        _HASHES[password] = await security.hash_password(password)
    return _HASHES[password]


@dataclass
class TestUser:
    id: uuid.UUID
    email: str
    password: str
    access_token: str = ""
    refresh_token: str = ""
    session_id: uuid.UUID | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def create_user(
    app: FastAPI,
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    full_name: str | None = "Test User",
    is_superuser: bool = False,
    is_active: bool = True,
    is_verified: bool = True,
    profile: bool = True,
    logged_in: bool = True,
) -> TestUser:
    """A user (with profile and starting credits unless ``profile=False``) and, by default, a session."""
    settings = state_of(app).settings
    email = email or unique_email()
    async with state_of(app).data.transaction(RequestContext(ip_address="127.0.0.1", user_agent=None)) as tx:
        user = await user_service.create_user(
            tx,
            email=email,
            hashed_password=await password_hash(password),
            full_name=full_name,
            is_superuser=is_superuser,
            is_verified=is_verified,
        )
        if not is_active:
            await user_service.change_user(tx, user.id, is_active=False)
        if profile:
            await user_service.get_or_create_profile(
                tx, user_id=user.id, full_name=full_name, credits=settings.DEFAULT_CREDITS
            )
        result = TestUser(id=user.id, email=user.email, password=password)
        if logged_in:
            tokens = await auth_service.start_session(tx, settings, user_id=user.id)
            result.access_token = tokens.access_token
            result.refresh_token = tokens.refresh_token
            result.session_id = tokens.session_id
    return result


async def load_user(app: FastAPI, user_id: uuid.UUID) -> User | None:
    async with state_of(app).sessionmaker() as session:
        user: User | None = await session.get(User, user_id)
        return user
