"""Superuser endpoints. Every route needs a superuser (401 without a token, 403 for anyone else; with
``ADMIN_REQUIRE_MFA=true`` 403 ``mfa_required`` for an aal1 token)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.admin import service as admin_service
from app.admin.schemas import AdminOrgRead, AdminUserDetail, AdminUserOrg, AdminUserRead, AdminUserUpdate
from app.admin.search import EmailSample, email_sample
from app.audit import service as audit_service
from app.audit.schemas import AuditEventRead
from app.auth.dependencies import Superuser, current_superuser
from app.auth.schemas import SessionRead
from app.core.data import DataDep, TxDep
from app.core.schemas import Page, PageDep
from app.credits.schemas import CreditAdjust, CreditSpendRead, CreditTransactionRead

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(current_superuser)],
)

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: 422, not a database error
SearchQuery = Annotated[str | None, Query(max_length=320, pattern=NO_NUL, description="Substring of the email or name")]


@router.get("/users", operation_id="admin-users-list")
async def list_users(
    data: DataDep,
    page: PageDep,
    sample: Annotated[EmailSample, Depends(email_sample)],
    search: SearchQuery = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
) -> Page[AdminUserRead]:
    """Every user, newest first; ``search`` matches the email or name (case-insensitive)."""
    users, total = await admin_service.list_users(
        data,
        limit=page.limit,
        offset=page.offset,
        search=search,
        is_active=is_active,
        is_superuser=is_superuser,
        sample=sample,
    )
    items = [AdminUserRead.model_validate(user) for user in users]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/users/{user_id}", operation_id="admin-users-get")
async def get_user(user_id: uuid.UUID, data: DataDep) -> AdminUserDetail:
    """A user with their organizations (and role in each) and their credit balance."""
    detail = await admin_service.get_user_detail(data, user_id)
    return AdminUserDetail(
        **AdminUserRead.model_validate(detail.user).model_dump(),
        organizations=[AdminUserOrg.model_validate(org, from_attributes=True) for org in detail.organizations],
        balance=detail.balance,
        credits=detail.balance,
    )


@router.patch("/users/{user_id}", operation_id="admin-users-update")
async def update_user(user_id: uuid.UUID, body: AdminUserUpdate, admin: Superuser, tx: TxDep) -> AdminUserRead:
    """Activate/deactivate (deactivating ends every session at once), promote/demote, rename.

    409 ``last_superuser`` when the change would leave no active superuser.
    """
    user = await admin_service.update_user(tx, actor=admin, user_id=user_id, changes=body)
    return AdminUserRead.model_validate(user)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="admin-users-delete",
)
async def delete_user(
    user_id: uuid.UUID,
    admin: Superuser,
    tx: TxDep,
    force: Annotated[bool, Query(description="Also delete the organizations this user owns alone")] = False,
) -> Response:
    """Delete a user; 409 ``sole_owner`` if they alone own organizations (unless ``force``)."""
    await admin_service.delete_user(tx, actor=admin, user_id=user_id, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users/{user_id}/sessions", operation_id="admin-users-sessions-list")
async def list_user_sessions(user_id: uuid.UUID, data: DataDep) -> list[SessionRead]:
    """The user's live sessions."""
    rows = await admin_service.list_user_sessions(data, user_id)
    return [SessionRead.model_validate(row) for row in rows]


@router.delete(
    "/users/{user_id}/sessions",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="admin-users-sessions-delete",
)
async def revoke_user_sessions(user_id: uuid.UUID, admin: Superuser, tx: TxDep) -> Response:
    """End every session of the user; their access tokens stop working at once."""
    await admin_service.revoke_user_sessions(tx, actor=admin, user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/{user_id}/credits", operation_id="admin-users-credits-adjust")
async def adjust_credits(user_id: uuid.UUID, body: CreditAdjust, admin: Superuser, tx: TxDep) -> CreditSpendRead:
    """Add (or take, with a negative amount) credits; 402 ``insufficient_credits`` below zero."""
    transaction = await admin_service.adjust_credits(
        tx, actor=admin, user_id=user_id, amount=body.amount, reason=body.reason
    )
    return CreditSpendRead(
        balance=transaction.balance_after, transaction=CreditTransactionRead.model_validate(transaction)
    )


@router.get("/organizations", operation_id="admin-organizations-list")
async def list_organizations(data: DataDep, page: PageDep, search: SearchQuery = None) -> Page[AdminOrgRead]:
    """Every organization, newest first, with its member count; ``search`` matches the name or slug."""
    rows, total = await admin_service.list_orgs(data, limit=page.limit, offset=page.offset, search=search)
    items = [AdminOrgRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.delete(
    "/organizations/{org_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="admin-organizations-delete",
)
async def delete_organization(org_id: uuid.UUID, admin: Superuser, tx: TxDep) -> Response:
    """Delete any organization, with its memberships and invitations."""
    await admin_service.delete_org(tx, actor=admin, org_id=org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/audit-events", operation_id="admin-audit-events-list")
async def list_audit_events(
    data: DataDep,
    page: PageDep,
    actor_id: uuid.UUID | None = None,
    user_id: Annotated[uuid.UUID | None, Query(description="The subject user")] = None,
    org_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> Page[AuditEventRead]:
    """The audit log, newest first, filtered by actor, subject user, organization or action."""
    events, total = await audit_service.list_events(
        data, limit=page.limit, offset=page.offset, actor_id=actor_id, user_id=user_id, org_id=org_id, action=action
    )
    items = [AuditEventRead.model_validate(event) for event in events]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)
