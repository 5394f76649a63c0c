from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from app.auth import mail
from app.auth import service as auth_service
from app.auth.dependencies import CurrentUser
from app.core.db import SessionDep
from app.core.responses import responses
from app.core.settings import SettingsDep
from app.users import service as user_service
from app.users.schemas import ProfileCreate, ProfileRead, ProfileUpdate, UserRead, UserUpdate

router = APIRouter(tags=["users"])


@router.get("/users/me", operation_id="users-me-get", responses=responses(401))
async def read_me(user: CurrentUser) -> UserRead:
    """The caller's account."""
    return UserRead.model_validate(user)


@router.patch("/users/me", operation_id="users-me-update", responses=responses(401, 409, 422))
async def update_me(
    body: UserUpdate,
    user: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
) -> UserRead:
    """Change the caller's name or email; a new email is unverified until confirmed from its mail."""
    user, new_email = await user_service.update_me(session, user=user, changes=body)
    token = await auth_service.request_email_verification(session, settings, user=user) if new_email else None
    if token is not None:
        mail.send_verification(request, background, to=user.email, token=token)
    return UserRead.model_validate(user)


@router.get("/profile", operation_id="profile-get", responses=responses(401, 404))
async def read_profile(user: CurrentUser, session: SessionDep) -> ProfileRead:
    """The caller's profile; 404 ``profile_not_found`` until ``POST /profile`` creates it."""
    return ProfileRead.model_validate(await user_service.get_profile(session, user.id))


@router.post(
    "/profile",
    status_code=status.HTTP_201_CREATED,
    operation_id="profile-create",
    responses={
        200: {"model": ProfileRead, "description": "The profile already existed"},
        **responses(401, 422),
    },
)
async def create_profile(
    user: CurrentUser,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    body: ProfileCreate | None = None,
) -> ProfileRead:
    """Get-or-create: 201 with a new profile (and the starting credits), 200 with the existing one.

    The body is optional (a bare ``POST /profile`` works); safe however many calls race."""
    profile, created = await user_service.get_or_create_profile(
        session, user=user, full_name=body.full_name if body else None, credits=settings.DEFAULT_CREDITS
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return ProfileRead.model_validate(profile)


@router.put("/profile", operation_id="profile-update", responses=responses(401, 404, 422))
async def update_profile(body: ProfileUpdate, user: CurrentUser, session: SessionDep) -> ProfileRead:
    """Change the name or avatar; credits are never set here (unknown fields are refused with 422)."""
    profile = await user_service.update_profile(session, user_id=user.id, changes=body)
    return ProfileRead.model_validate(profile)
