from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.auth.passwords import MAX_LENGTH, MIN_LENGTH, NON_SPACE_PATTERN, password_problem
from app.core.schemas import Email, StrictModel

# A password being presented (login, the current password): any length up to a bound.
PasswordIn = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH * 4)]
DeviceName = Annotated[str | None, Field(default=None, max_length=255)]


def password_policy(password: str, email: str | None = None) -> str:
    """The rules a form cannot check (common passwords, equal to the email), as a plain field error."""
    problem = password_problem(password, email=email)
    if problem:
        raise PydanticCustomError("password_policy", problem)
    return password


# A new password: the lengths and "at least one non-space character" are in the schema (minLength, maxLength,
# pattern), so a form checks them before sending; the rest answers 422 under the field, with a plain message.
NewPassword = Annotated[
    str,
    Field(
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        json_schema_extra={"pattern": NON_SPACE_PATTERN},
        description=f"{MIN_LENGTH}..{MAX_LENGTH} characters, not only spaces, not a common password, not the email.",
    ),
    AfterValidator(password_policy),
]


class RegisterRequest(StrictModel):
    email: Email
    password: NewPassword
    full_name: Annotated[str | None, Field(default=None, max_length=255)] = None

    @field_validator("password")
    @classmethod
    def _not_the_email(cls, password: str, info: ValidationInfo) -> str:
        return password_policy(password, info.data.get("email"))


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
    new_password: NewPassword


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
    new_password: NewPassword


class MfaChallengeRead(BaseModel):
    """The login answer when MFA is on: no tokens; send ``mfa_token`` with a code to ``POST /auth/mfa/verify``."""

    mfa_required: Literal[True] = True
    mfa_token: str
    expires_in: int = Field(description="Seconds until the mfa_token expires.")


LoginAnswer = TokenPair | MfaChallengeRead

# Any shape is accepted and checked (a wrong one is a wrong code, 400/401 invalid_code, and costs a try).
MfaCode = Annotated[str, Field(min_length=1, max_length=32, description="The 6-digit code of the authenticator app.")]
RecoveryCode = Annotated[str, Field(min_length=1, max_length=64, description="One of the recovery codes.")]


class SecondFactorIn(StrictModel):
    """Exactly one of ``code`` and ``recovery_code``."""

    code: MfaCode | None = None
    recovery_code: RecoveryCode | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecondFactorIn:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("send exactly one of code and recovery_code")
        return self


class TotpEnrollRequest(StrictModel):
    current_password: PasswordIn


class TotpEnrollment(BaseModel):
    secret: str = Field(description="Base32 TOTP secret, for typing into an authenticator app.")
    otpauth_uri: str = Field(description="otpauth://totp/... URI, for a QR code.")


class TotpConfirmRequest(StrictModel):
    code: MfaCode


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="Shown only now: each works once, instead of a code.")


class TotpDisableRequest(SecondFactorIn):
    pass


class MfaVerifyRequest(SecondFactorIn):
    mfa_token: Annotated[str, Field(min_length=1, max_length=512)]
