"""MFA through the real endpoints, with real TOTP codes (pyotp, the library the app uses)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from fastapi import FastAPI
from sqlalchemy import update

from app.auth.models import MfaFactor
from app.state import state_of
from tests.factories import TestUser

MFA = "/api/v1/auth/mfa"


def code_at(secret: str, *, steps: int = 0) -> str:
    """The code of the current 30-second step, or ``steps`` later/earlier."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps))


async def forget_used_codes(app: FastAPI, user_id: uuid.UUID) -> None:
    """Let the current step's code be used again: tests that need several logins in one 30-second step."""
    async with state_of(app).sessionmaker() as session:
        await session.execute(update(MfaFactor).where(MfaFactor.user_id == user_id).values(last_used_step=None))
        await session.commit()


async def enroll(client: httpx.AsyncClient, user: TestUser) -> str:
    response = await client.post(f"{MFA}/totp/enroll", json={"current_password": user.password}, headers=user.headers)
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    return secret


async def enable_mfa(client: httpx.AsyncClient, app: FastAPI, user: TestUser) -> tuple[str, list[str]]:
    """Enrol and confirm: (secret, recovery codes). The confirming code is forgotten again, so that the test
    can use the current step's code."""
    secret = await enroll(client, user)
    response = await client.post(f"{MFA}/totp/confirm", json={"code": code_at(secret)}, headers=user.headers)
    assert response.status_code == 200, response.text
    await forget_used_codes(app, user.id)
    codes: list[str] = response.json()["recovery_codes"]
    return secret, codes


async def start_login(client: httpx.AsyncClient, user: TestUser) -> str:
    response = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    assert response.json()["mfa_required"] is True
    token: str = response.json()["mfa_token"]
    return token


async def login_aal2(client: httpx.AsyncClient, app: FastAPI, user: TestUser, secret: str) -> str:
    """Password, then a code: an aal2 access token."""
    await forget_used_codes(app, user.id)
    token = await start_login(client, user)
    response = await client.post(f"{MFA}/verify", json={"mfa_token": token, "code": code_at(secret)})
    assert response.status_code == 200, response.text
    access: str = response.json()["access_token"]
    return access
