from __future__ import annotations

import base64
import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Form, Request, Response, status
from pydantic import ValidationError

from app.auth import cookies, mail, mfa
from app.auth import service as auth_service
from app.auth.dependencies import (
    CurrentPrincipal,
    CurrentUser,
    OptionalPrincipal,
    OwnPrincipal,
)
from app.auth.exceptions import (
    InvalidClientError,
    InvalidCredentialsError,
    InvalidRefreshTokenError,
    NotAuthenticatedError,
    NotOwnSessionError,
    TokenRequestInvalidError,
    UnsupportedGrantTypeError,
    invalid_grant,
)
from app.auth.models import EmailTokenPurpose, RevokeReason
from app.auth.schemas import (
    LoginAnswer,
    LoginRequest,
    LogoutRequest,
    MfaChallengeRead,
    MfaVerifyRequest,
    PasswordChangeRequest,
    PasswordResetConfirm,
    PasswordResetRequest,
    RecoveryCodes,
    RefreshRequest,
    RegisterRequest,
    SecondFactorIn,
    SessionRead,
    TokenPair,
    TotpConfirmRequest,
    TotpDisableRequest,
    TotpEnrollment,
    TotpEnrollRequest,
    VerifyEmailConfirm,
)
from app.core.context import RequestContextDep
from app.core.data import DataDep, TxDep
from app.core.errors import Unauthenticated
from app.core.raises import errors_of, raises
from app.core.schemas import ACCEPTED, Accepted, Page, PageDep
from app.core.settings import Settings, SettingsDep
from app.users.schemas import UserRead

router = APIRouter(prefix="/auth", tags=["auth"])


def _login_answer(
    answer: auth_service.IssuedTokens | auth_service.MfaChallengeIssued, response: Response, settings: Settings
) -> LoginAnswer:
    """Tokens, or (MFA on) the challenge to complete at POST /auth/mfa/verify."""
    if isinstance(answer, auth_service.MfaChallengeIssued):
        response.headers["Cache-Control"] = "no-store"
        return MfaChallengeRead(mfa_token=answer.mfa_token, expires_in=answer.expires_in)
    return _pair(answer, response, settings)


def _pair(tokens: auth_service.IssuedTokens, response: Response, settings: Settings) -> TokenPair:
    """The token answer; in cookie mode the refresh token also goes into its HttpOnly cookie (+ CSRF cookie)."""
    response.headers["Cache-Control"] = "no-store"
    cookies.set_session_cookies(response, settings, refresh_token=tokens.refresh_token, session_id=tokens.session_id)
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
)
async def register(
    body: RegisterRequest,
    request: Request,
    background: BackgroundTasks,
    tx: TxDep,
    settings: SettingsDep,
) -> UserRead:
    """Create an own account (and its profile). No tokens: log in next. A verification mail is sent."""
    user = await auth_service.register(tx, settings, email=body.email, password=body.password, full_name=body.full_name)
    token = await auth_service.create_email_token(tx, settings, user=user, purpose=EmailTokenPurpose.VERIFY_EMAIL)
    mail.send_verification(request, background, to=user.email, token=token)
    return UserRead.model_validate(user)


@router.post("/login", operation_id="auth-login")
async def login(body: LoginRequest, response: Response, data: DataDep, tx: TxDep, settings: SettingsDep) -> LoginAnswer:
    """Email and password for an access token (short-lived JWT) and a refresh token (opaque, rotated).
    With ``AUTH_REFRESH_COOKIE=true`` the refresh token is also set in an HttpOnly cookie, plus ``csrf_token``.
    With MFA on, the answer is ``{"mfa_required": true, "mfa_token", "expires_in"}`` instead, and the tokens come
    from ``POST /auth/mfa/verify``."""
    answer = await auth_service.login(
        data, tx, settings, email=body.email, password=body.password, device_name=body.device_name
    )
    return _login_answer(answer, response, settings)


# Every refusal of either grant (401s of the login and the refresh) answers 400 invalid_grant with its own code.
GRANT_REFUSALS = tuple(
    sorted(
        (e for e in errors_of(auth_service.login) | errors_of(auth_service.refresh) if issubclass(e, Unauthenticated)),
        key=lambda e: e.__name__,
    )
)
TokenField = Annotated[str | None, Form()]


def _basic_secret(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return "?"  # an unreadable Basic header is a failed client authentication too


@router.post("/token", operation_id="auth-token")
@raises(*(invalid_grant(refusal) for refusal in GRANT_REFUSALS))
async def token(
    request: Request,
    response: Response,
    data: DataDep,
    tx: TxDep,
    settings: SettingsDep,
    grant_type: Annotated[str | None, Form(description="`password` or `refresh_token`")] = None,
    username: Annotated[str | None, Form(description="password grant: the email")] = None,
    password: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    refresh_token: Annotated[str | None, Form(description="refresh_token grant: the refresh token")] = None,
    scope: TokenField = None,
    client_id: Annotated[str | None, Form(description="Any: every client is public")] = None,
    client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
) -> LoginAnswer:
    """The OAuth2 token endpoint (RFC 6749), for Swagger UI's Authorize button and generic OAuth2 clients.

    ``grant_type=password`` (``username`` = the email, ``password``) answers like ``POST /auth/login``, the MFA
    challenge included; ``grant_type=refresh_token`` (``refresh_token``) like ``POST /auth/refresh``. Errors
    carry ``error`` and ``error_description`` beside ``detail`` and ``code``: 400 ``invalid_grant`` (the code says
    why: ``invalid_credentials``, ``inactive_user``, ``refresh_token_reused``, ...), ``invalid_request`` (a
    missing parameter), ``unsupported_grant_type``; 401 ``invalid_client`` for a client secret (every client is
    public: send a ``client_id`` or nothing)."""
    del scope, client_id  # no scopes; any client id (public clients)
    if client_secret or _basic_secret(request):
        raise InvalidClientError()
    if grant_type is None:
        raise TokenRequestInvalidError("grant_type is required (password or refresh_token).")
    if grant_type == "password":
        if not username or password is None:
            raise TokenRequestInvalidError("The password grant needs username and password.")
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise TokenRequestInvalidError("The refresh_token grant needs refresh_token.")
    else:
        raise UnsupportedGrantTypeError()
    response.headers["Pragma"] = "no-cache"
    try:
        if grant_type == "refresh_token":
            assert refresh_token is not None
            tokens = await auth_service.refresh(tx, settings, token=refresh_token)
            return _pair(tokens, response, settings)
        try:
            body = LoginRequest(email=username, password=password)
        except ValidationError as exc:
            raise InvalidCredentialsError() from exc
        answer = await auth_service.login(data, tx, settings, email=body.email, password=body.password)
    except Unauthenticated as refusal:
        raise invalid_grant(type(refusal))(refusal.detail) from refusal
    return _login_answer(answer, response, settings)


@router.post("/refresh", operation_id="auth-refresh")
async def refresh(
    request: Request,
    response: Response,
    tx: TxDep,
    settings: SettingsDep,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> TokenPair:
    """Spend a refresh token for a new pair. A token used twice (outside a short grace window) ends the
    whole session: 401 ``refresh_token_reused``. In cookie mode, without a token in the body, the refresh
    cookie is used, with an ``X-CSRF-Token`` header equal to the ``csrf_token`` cookie (403 ``csrf_failed``)."""
    token = cookies.refresh_token_from(request, settings, body.refresh_token if body else None)
    if not token:
        raise InvalidRefreshTokenError(cookies.missing_refresh_token_detail(settings))
    tokens = await auth_service.refresh(tx, settings, token=token)
    return _pair(tokens, response, settings)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-logout",
)
async def logout(
    principal: OptionalPrincipal,
    request: Request,
    response: Response,
    tx: TxDep,
    settings: SettingsDep,
    body: Annotated[LogoutRequest | None, Body()] = None,
) -> None:
    """End the current session: its access and refresh tokens stop working at once.

    The session is the access token's; without an access token, the one a refresh token names (in the body,
    or in cookie mode the refresh cookie with the CSRF header); it is ended, not rotated. In cookie mode both
    cookies are cleared."""
    if principal is not None:
        if principal.session_id is None:
            raise NotOwnSessionError()
        await auth_service.revoke_session(
            tx, user_id=principal.user.id, session_id=principal.session_id, reason=RevokeReason.LOGOUT
        )
    else:
        token = cookies.refresh_token_from(request, settings, body.refresh_token if body else None)
        if not token:  # in cookie mode, say why a browser may have sent no cookie
            raise NotAuthenticatedError(cookies.MISSING_REFRESH_COOKIE if settings.AUTH_REFRESH_COOKIE else None)
        await auth_service.logout_with_refresh_token(tx, settings, token=token)
    cookies.clear_session_cookies(response, settings)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-logout-all",
)
async def logout_all(user: CurrentUser, tx: TxDep) -> None:
    """End every session of the caller, on every device."""
    await auth_service.logout_all(tx, user_id=user.id)


@router.get("/sessions", operation_id="auth-sessions-list")
async def list_sessions(principal: OwnPrincipal, data: DataDep, page: PageDep) -> Page[SessionRead]:
    """The caller's live sessions, paged, newest first; ``current`` marks the one this token belongs to. A user
    has at most ``MAX_SESSIONS_PER_USER`` of them: a login beyond it ends the least recently used."""
    rows, total = await auth_service.list_sessions(
        data, user_id=principal.user.id, limit=page.limit, offset=page.offset
    )
    items = [
        SessionRead.model_validate(row).model_copy(update={"current": row.id == principal.session_id}) for row in rows
    ]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-sessions-delete",
)
async def delete_session(session_id: uuid.UUID, principal: OwnPrincipal, tx: TxDep) -> None:
    """End one of the caller's sessions (404 if it is not theirs)."""
    await auth_service.revoke_session(
        tx, user_id=principal.user.id, session_id=session_id, reason=RevokeReason.SESSION_DELETED
    )


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-password-change",
)
async def change_password(body: PasswordChangeRequest, principal: CurrentPrincipal, tx: TxDep) -> None:
    """Change the password; every other session of the caller ends."""
    await auth_service.change_password(
        tx,
        user_id=principal.user.id,
        current_password=body.current_password,
        new_password=body.new_password,
        current_session_id=principal.session_id,
    )


@router.post(
    "/verify-email/request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth-verify-email-request",
)
async def request_email_verification(
    user: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    tx: TxDep,
    settings: SettingsDep,
) -> Accepted:
    """Mail a verification link (always 202; nothing is sent when the email is already verified, or is
    managed by Supabase). The mail goes out after the response."""
    token = await auth_service.request_email_verification(tx, settings, user=user)
    if token is not None:
        mail.send_verification(request, background, to=user.email, token=token)
    return ACCEPTED


@router.post(
    "/verify-email/confirm",
    operation_id="auth-verify-email-confirm",
)
async def confirm_email_verification(body: VerifyEmailConfirm, tx: TxDep) -> UserRead:
    """Spend a verification token (single-use): the account's email is verified. 400 ``invalid_token`` when it
    is unknown, expired, used, or was mailed to an address the account no longer has."""
    user = await auth_service.verify_email(tx, token=body.token)
    return UserRead.model_validate(user)


@router.post(
    "/password-reset/request",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="auth-password-reset-request",
)
async def request_password_reset(
    body: PasswordResetRequest, request: Request, ctx: RequestContextDep, background: BackgroundTasks
) -> Accepted:
    """Always 202, at once: the lookup, the token and the mail (only for an active own account) happen after
    the answer, so neither the answer nor its timing tells whether the address has an account. A new request
    spends the reset links mailed before."""
    mail.password_reset_later(request, background, email=body.email, context=ctx)
    return ACCEPTED


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-password-reset-confirm",
)
async def confirm_password_reset(body: PasswordResetConfirm, tx: TxDep) -> None:
    """Set a new password with a reset token; the email counts as verified and every session ends."""
    await auth_service.reset_password(tx, token=body.token, new_password=body.new_password)


# --- multi-factor authentication (TOTP) ---------------------------------------------------------------


def _second_factor(body: SecondFactorIn) -> mfa.SecondFactor:
    return mfa.SecondFactor(code=body.code, recovery_code=body.recovery_code)


@router.post(
    "/mfa/totp/enroll",
    operation_id="auth-mfa-totp-enroll",
)
async def enroll_totp(
    body: TotpEnrollRequest, principal: OwnPrincipal, response: Response, tx: TxDep, settings: SettingsDep
) -> TotpEnrollment:
    """Start TOTP enrolment (the current password is required): a new secret and its ``otpauth://`` URI (for a
    QR code), pending until ``/auth/mfa/totp/confirm``; a pending one is replaced. 409 while MFA is on."""
    enrollment = await mfa.enroll(tx, settings, user_id=principal.user.id, current_password=body.current_password)
    response.headers["Cache-Control"] = "no-store"
    return TotpEnrollment(secret=enrollment.secret, otpauth_uri=enrollment.otpauth_uri)


@router.post(
    "/mfa/totp/confirm",
    operation_id="auth-mfa-totp-confirm",
)
async def confirm_totp(
    body: TotpConfirmRequest,
    principal: OwnPrincipal,
    response: Response,
    tx: TxDep,
    settings: SettingsDep,
) -> RecoveryCodes:
    """Turn MFA on with a first code from the app: answers the 10 recovery codes, shown only this once. This
    session becomes ``aal2``; later logins need a code (``/auth/mfa/verify``)."""
    assert principal.session_id is not None
    codes = await mfa.confirm(tx, settings, user_id=principal.user.id, session_id=principal.session_id, code=body.code)
    response.headers["Cache-Control"] = "no-store"
    return RecoveryCodes(recovery_codes=codes)


@router.delete(
    "/mfa/totp",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="auth-mfa-totp-disable",
)
async def disable_totp(
    body: TotpDisableRequest,
    principal: OwnPrincipal,
    tx: TxDep,
    settings: SettingsDep,
) -> None:
    """Turn MFA off with a current code or a recovery code. Every other session of the caller ends; this one
    continues as ``aal1``."""
    assert principal.session_id is not None
    await mfa.disable(
        tx, settings, user_id=principal.user.id, session_id=principal.session_id, proof=_second_factor(body)
    )


@router.post(
    "/mfa/verify",
    operation_id="auth-mfa-verify",
)
async def verify_mfa(body: MfaVerifyRequest, response: Response, tx: TxDep, settings: SettingsDep) -> TokenPair:
    """The second step of a login with MFA on: the ``mfa_token`` of the login answer and a code (or a recovery
    code, which then is spent) give the login's tokens, of an ``aal2`` session. 401 ``invalid_code`` for a
    wrong or already used code; after 5 of them, or once used or 5 minutes old, the token is spent: 401
    ``mfa_token_invalid`` (sign in again)."""
    tokens = await mfa.verify(tx, settings, mfa_token=body.mfa_token, proof=_second_factor(body))
    return _pair(tokens, response, settings)
