from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response, status
from fastapi.responses import StreamingResponse

from app.auth import mail
from app.auth import service as auth_service
from app.auth.dependencies import CurrentPrincipal, CurrentUser, OptionalPrincipal
from app.core.data import DataDep, TxDep
from app.core.schemas import ACCEPTED, Accepted
from app.core.settings import SettingsDep
from app.state import state_of
from app.users import lifecycle
from app.users import service as user_service
from app.users.schemas import (
    AccountDelete,
    AccountExport,
    EmailChangeConfirm,
    EmailChangeRequest,
    ProfileCreate,
    ProfileRead,
    ProfileUpdate,
    UserMe,
    UserRead,
    UserUpdate,
)

router = APIRouter(tags=["users"])


@router.get("/users/me", operation_id="users-me-get")
async def read_me(principal: CurrentPrincipal) -> UserMe:
    """The caller's account, with ``mfa_enabled`` and the caller's assurance level ``aal``."""
    return UserMe(**UserRead.model_validate(principal.user).model_dump(), aal=principal.aal)


@router.patch("/users/me", operation_id="users-me-update")
async def update_me(body: UserUpdate, user: CurrentUser, tx: TxDep) -> UserRead:
    """Change the caller's name. The email changes through ``POST /users/me/email`` (``email`` here is a 422)."""
    updated = await user_service.update_me(tx, user_id=user.id, changes=body)
    return UserRead.model_validate(updated)


@router.delete(
    "/users/me",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="users-me-delete",
)
async def delete_me(principal: CurrentPrincipal, tx: TxDep, body: AccountDelete | None = None) -> Response:
    """Delete the caller's account for good, after re-authentication: ``current_password`` for own accounts
    (401 ``invalid_credentials`` when wrong), a Supabase token issued in the last 5 minutes for Supabase users
    (401 ``reauthentication_required`` otherwise, also for an own account sending no password).

    Deleted at once: the user, profile, sessions (every access and refresh token is refused on its next use,
    on every worker), email tokens, MFA data, memberships, the invitations they sent, the credit ledger, and the
    organizations they alone belong to. Audit events stay, without the email. 409 ``sole_owner`` while they are
    the last owner of an organization with other members (transfer ownership first); 409 ``last_superuser``.
    A Supabase token issued before the deletion is refused afterwards (401 ``account_deleted``)."""
    await lifecycle.check_reauthentication(tx, principal, current_password=body.current_password if body else None)
    await lifecycle.delete_account(tx, user_id=principal.user.id, actor_id=principal.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users/me/export",
    operation_id="users-me-export",
    response_class=StreamingResponse,
    responses={
        200: {
            "model": AccountExport,
            "description": "The account export, as a download (`Content-Disposition: attachment`)",
            "headers": {"Content-Disposition": {"schema": {"type": "string"}, "description": "attachment"}},
        },
    },
)
async def export_me(user: CurrentUser, request: Request) -> StreamingResponse:
    """Everything kept about the caller as one JSON document (``AccountExport``), downloaded as a file: account,
    profile, MFA state (never its secret or codes), sessions, memberships, invitations sent, the whole credit
    ledger and the audit events the caller did or that are about them. No password hash, token or token hash.
    Streamed: large ledgers are read and written 1,000 rows at a time from one consistent snapshot."""
    return StreamingResponse(
        lifecycle.export_document(state_of(request.app).engine, user.id),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{lifecycle.export_filename(user.id)}"',
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/users/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="users-me-email-change",
)
async def request_email_change(
    body: EmailChangeRequest,
    user: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    tx: TxDep,
    settings: SettingsDep,
) -> Accepted:
    """Ask to move the account to another address (own accounts, with the current password). Nothing changes
    yet: a link to ``{FRONTEND_URL}/confirm-email-change?token=`` goes to the new address (1 h, single-use) and
    a notice without a link to the current one. 401 ``invalid_credentials`` for a wrong password, 409
    ``email_taken``, 409 ``managed_by_supabase`` for Supabase users."""
    token = await auth_service.request_email_change(
        tx, settings, user=user, new_email=body.email, current_password=body.current_password
    )
    mail.send_email_change(request, background, old_email=user.email, new_email=body.email, token=token)
    return ACCEPTED


@router.post(
    "/users/me/email/confirm",
    operation_id="users-me-email-confirm",
)
async def confirm_email_change(body: EmailChangeConfirm, principal: OptionalPrincipal, tx: TxDep) -> UserRead:
    """Spend the mailed token (with or without the user's access token): the account has the new address,
    verified, and every session of it ends except the caller's. 400 ``invalid_token`` (unknown, expired, used),
    409 ``email_taken`` when the address found an account meanwhile."""
    user, _former = await auth_service.confirm_email_change(
        tx, token=body.token, keep_session=principal.session_id if principal is not None else None
    )
    return UserRead.model_validate(user)


@router.get("/profile", operation_id="profile-get")
async def read_profile(user: CurrentUser, data: DataDep) -> ProfileRead:
    """The caller's profile; 404 ``profile_not_found`` until ``POST /profile`` creates it."""
    return ProfileRead.model_validate(await user_service.read_profile(data, user.id))


@router.post(
    "/profile",
    status_code=status.HTTP_201_CREATED,
    operation_id="profile-create",
    responses={200: {"model": ProfileRead, "description": "The profile already existed"}},
)
async def create_profile(
    user: CurrentUser,
    response: Response,
    tx: TxDep,
    settings: SettingsDep,
    body: ProfileCreate | None = None,
) -> ProfileRead:
    """Get-or-create: 201 with a new profile (and the starting credits), 200 with the existing one.

    The body is optional (a bare ``POST /profile`` works); safe however many calls race."""
    full_name = (body.full_name if body else None) or user.full_name
    profile, created = await user_service.get_or_create_profile(
        tx, user_id=user.id, full_name=full_name, credits=settings.DEFAULT_CREDITS
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ProfileRead.model_validate(profile)


@router.put("/profile", operation_id="profile-update")
async def update_profile(body: ProfileUpdate, user: CurrentUser, tx: TxDep) -> ProfileRead:
    """Change the name or avatar; credits are never set here (unknown fields are refused with 422)."""
    profile = await user_service.update_profile(tx, user_id=user.id, changes=body)
    return ProfileRead.model_validate(profile)
