"""Supabase access tokens: verification and first-sight provisioning of the local user.

Until a deployment configures Supabase (SUPABASE_JWT_SECRET or SUPABASE_URL/SUPABASE_JWKS_URL), tokens
that are not this API's own are refused with 401.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.exceptions import InvalidAccessTokenError
from app.users.models import User


async def authenticate(request: Request, session: AsyncSession, token: str) -> User:
    raise InvalidAccessTokenError()
