from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import ValidationError

from app.audit import service as audit
from app.auth import mail
from app.auth import service as auth_service
from app.auth.dependencies import CurrentPrincipal, CurrentUser, SettingsDep, client_ip
from app.auth.exceptions import InvalidCredentialsError, InvalidRefreshTokenError, NotOwnSessionError
from app.auth.models import EmailTokenPurpose, RevokeReason
from app.auth.schemas import (
    LoginRequest,
    PasswordChangeRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    SessionRead,
    TokenPair,
    VerifyEmailConfirm,
)
from app.core.db import SessionDep
from app.core.responses import responses
from app.users import service as user_service
from app.users.schemas import UserRead

router = APIRouter(prefix="/auth", tags=["auth"])


def _client(request: Request, device_name: str | None = None) -> auth_service.ClientInfo:
    return auth_service.ClientInfo(
        ip_address=client_ip(request), user_agent=request.headers.get("user-agent"), device_name=device_name
    )


def _pair(tokens: auth_service.IssuedTokens) -> TokenPair:
    return TokenPair(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        session_id=tokens.session_id,
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    operation_id="auth-register",
    responses=responses(409, 422, 429),
)
async def register(
    body: RegisterRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
) -> UserRead:
    """Create an own account (and its profile). No tokens: log in next. A verification mail is sent."""
    user = await auth_service.register(
        session, settings, email=body.email, password=body.password, full_name=body.full_name
    )
    token = await auth_service.create_email_token(session, settings, user=user, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    mail.send_verification(request, background, to=user.email, token=token)
    return UserRead.model_validate(user)


@router.post("/login", operation_id="auth-login", responses=responses(401, 422, 429))
async def login(body: LoginRequest, request: Request, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Email and password for an access token (short-lived JWT) and a refresh token (opaque, rotated)."""
    tokens = await auth_service.login(
        session, settings, email=body.email, password=body.password, client=_client(request, body.device_name)
    )
    return _pair(tokens)


@router.post("/token", operation_id="auth-token", responses=responses(401, 422, 429))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
) -> TokenPair:
    """The OAuth2 password flow (form fields ``username`` and ``password``), for Swagger UI's Authorize."""
    try:
        body = LoginRequest(email=form.username, password=form.password)
    except ValidationError as exc:
        raise InvalidCredentialsError() from exc
    tokens = await auth_service.login(
        session, settings, email=body.email, password=body.password, client=_client(request)
    )
    return _pair(tokens)


@router.post("/refresh", operation_id="auth-refresh", responses=responses(401, 422, 429))
async def refresh(body: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Spend a refresh token for a new pair. A token used twice (outside a short grace window) ends the
    whole session: 401 ``refresh_token_reused``."""
    if not body.refresh_token:
        raise InvalidRefreshTokenError("A refresh token is required.")
    tokens = await auth_service.refresh(session, settings, token=body.refresh_token, client=_client(request))
    return _pair(tokens)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, operation_id="auth-logout", responses=responses(401))
async def logout(principal: CurrentPrincipal, request: Request, session: SessionDep) -> None:
    """End the current session: its access and refresh tokens stop working at once."""
    if principal.session_id is None:
        raise NotOwnSessionError()
    await auth_service.revoke_session(
        session,
        user_id=principal.user.id,
        session_id=principal.session_id,
        reason=RevokeReason.LOGOUT,
        ip_address=client_ip(request),
    )


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-logout-all",
    responses=responses(401),
)
async def logout_all(user: CurrentUser, request: Request, session: SessionDep) -> None:
    """End every session of the caller, on every device."""
    await auth_service.logout_all(session, user_id=user.id, ip_address=client_ip(request))


@router.get("/sessions", operation_id="auth-sessions-list", responses=responses(401))
async def list_sessions(principal: CurrentPrincipal, session: SessionDep) -> list[SessionRead]:
    """The caller's live sessions; ``current`` marks the one this token belongs to."""
    rows = await auth_service.list_sessions(session, user_id=principal.user.id)
    return [
        SessionRead.model_validate(row).model_copy(update={"current": row.id == principal.session_id}) for row in rows
    ]


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-sessions-delete",
    responses=responses(401, 404),
)
async def delete_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, request: Request, session: SessionDep
) -> None:
    """End one of the caller's sessions (404 if it is not theirs)."""
    await auth_service.revoke_session(
        session,
        user_id=principal.user.id,
        session_id=session_id,
        reason=RevokeReason.SESSION_DELETED,
        ip_address=client_ip(request),
    )


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-password-change",
    responses=responses(400, 401, 422, 429),
)
async def change_password(
    body: PasswordChangeRequest, principal: CurrentPrincipal, request: Request, session: SessionDep
) -> None:
    """Change the password; every other session of the caller ends."""
    await auth_service.change_password(
        session,
        user=principal.user,
        current_password=body.current_password,
        new_password=body.new_password,
        current_session_id=principal.session_id,
        ip_address=client_ip(request),
    )


@router.post(
    "/verify-email/request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth-verify-email-request",
    responses=responses(401, 429),
)
async def request_email_verification(
    user: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
) -> None:
    """Mail a verification link (nothing is sent when the email is already verified)."""
    if user.is_verified:
        return
    token = await auth_service.create_email_token(session, settings, user=user, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    mail.send_verification(request, background, to=user.email, token=token)


@router.post(
    "/verify-email/confirm",
    operation_id="auth-verify-email-confirm",
    responses=responses(400, 422, 429),
)
async def confirm_email_verification(body: VerifyEmailConfirm, request: Request, session: SessionDep) -> UserRead:
    """Spend a verification token: the account's email is verified."""
    user = await auth_service.consume_email_token(session, token=body.token, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    user.is_verified = True
    await audit.record(
        session,
        "auth.email_verified",
        actor_id=user.id,
        subject_user_id=user.id,
        ip_address=client_ip(request),
    )
    await session.flush()
    return UserRead.model_validate(user)


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth-password-reset-request",
    responses=responses(422, 429),
)
async def request_password_reset(
    body: PasswordResetRequest,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
) -> None:
    """Always 202: only an active own account gets a mail, and the answer does not tell which."""
    user = await user_service.find_user_by_email(session, body.email)
    if user is None or not user.is_active or not auth_service.is_own_account(user):
        return
    token = await auth_service.create_email_token(
        session, settings, user=user, purpose=EmailTokenPurpose.PASSWORD_RESET
    )
    await audit.record(session, "auth.password_reset_requested", subject_user_id=user.id, ip_address=client_ip(request))
    mail.send_password_reset(request, background, to=user.email, token=token)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-password-reset-confirm",
    responses=responses(400, 422, 429),
)
async def confirm_password_reset(body: PasswordResetConfirm, request: Request, session: SessionDep) -> None:
    """Set a new password with a reset token; the email counts as verified and every session ends."""
    await auth_service.reset_password(
        session, token=body.token, new_password=body.new_password, ip_address=client_ip(request)
    )
