from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.auth.passwords import MAX_LENGTH, password_problem
from app.core.schemas import Email, StrictModel

# Length is checked here; the common-password and not-the-email rules in the models below.
PasswordIn = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH * 4)]
DeviceName = Annotated[str | None, Field(default=None, max_length=255)]


def _check_password(password: str, email: str | None = None) -> None:
    problem = password_problem(password, email=email)
    if problem:
        raise ValueError(problem)


class RegisterRequest(StrictModel):
    email: Email
    password: Annotated[str, Field(max_length=MAX_LENGTH)]
    full_name: Annotated[str | None, Field(default=None, max_length=255)] = None

    @model_validator(mode="after")
    def _password_rules(self) -> RegisterRequest:
        _check_password(self.password, self.email)
        return self


class LoginRequest(StrictModel):
    email: Email
    password: PasswordIn
    device_name: DeviceName = None


class RefreshRequest(StrictModel):
    refresh_token: Annotated[str | None, Field(default=None, max_length=512)] = None


class LogoutRequest(StrictModel):
    refresh_token: Annotated[str | None, Field(default=None, max_length=512)] = None


class PasswordChangeRequest(StrictModel):
    current_password: PasswordIn
    new_password: Annotated[str, Field(max_length=MAX_LENGTH)]

    @model_validator(mode="after")
    def _password_rules(self) -> PasswordChangeRequest:
        _check_password(self.new_password)
        return self


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    session_id: uuid.UUID


class SessionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_name: str | None
    user_agent: str | None
    ip_address: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool = False


class VerifyEmailConfirm(StrictModel):
    token: Annotated[str, Field(min_length=1, max_length=512)]


class PasswordResetRequest(StrictModel):
    email: Email


class PasswordResetConfirm(StrictModel):
    token: Annotated[str, Field(min_length=1, max_length=512)]
    new_password: Annotated[str, Field(max_length=MAX_LENGTH)]

    @model_validator(mode="after")
    def _password_rules(self) -> PasswordResetConfirm:
        _check_password(self.new_password)
        return self
