"""Organizations, members, invitations. Access is the guard alias of each handler, named for the action it
performs (app/orgs/dependencies.py); the rules that depend on a target's role are the service's (asking
``policy.decide`` with the same action)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, BackgroundTasks, Request, status

from app.audit.schemas import AuditEventRead
from app.auth.dependencies import CurrentCaller, CurrentUser
from app.core.data import DataDep, TxDep
from app.core.schemas import Page, PageDep
from app.core.settings import SettingsDep
from app.orgs import api_keys, mail
from app.orgs import service as org_service
from app.orgs.dependencies import (
    AddMember,
    ChangeRole,
    CreateApiKey,
    DeleteOrg,
    Invite,
    ListApiKeys,
    ListInvitations,
    ListMembers,
    RemoveOrLeave,
    RevokeApiKey,
    RevokeInvitation,
    TransferOrg,
    UpdateOrg,
    ViewAudit,
    ViewOrg,
)
from app.orgs.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    MemberCreate,
    MemberRead,
    MemberRoleUpdate,
    MembershipRead,
    OrgCreate,
    OrgRead,
    OrgUpdate,
    TransferOwnership,
)

router = APIRouter(prefix="/organizations", tags=["organizations"])
invitations_router = APIRouter(prefix="/invitations", tags=["organizations"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="orgs-create",
)
async def create_org(body: OrgCreate, user: CurrentUser, tx: TxDep) -> OrgRead:
    """Create an organization; the caller becomes its owner. Without a slug one is made from the name."""
    org = await org_service.create_org(tx, owner_id=user.id, name=body.name, slug=body.slug)
    return OrgRead.model_validate(org)


@router.get("", operation_id="orgs-list")
async def list_orgs(user: CurrentUser, page: PageDep, data: DataDep) -> Page[OrgRead]:
    """The organizations the caller belongs to, with the caller's role in each."""
    orgs, total = await org_service.list_my_orgs(data, user_id=user.id, limit=page.limit, offset=page.offset)
    return Page(items=[OrgRead.model_validate(o) for o in orgs], total=total, limit=page.limit, offset=page.offset)


@router.get("/{org_id}", operation_id="orgs-get")
async def read_org(actor: ViewOrg, data: DataDep) -> OrgRead:
    """One organization (members only; anyone else gets 404)."""
    return OrgRead.model_validate(await org_service.read_org(data, actor=actor))


@router.patch("/{org_id}", operation_id="orgs-update")
async def update_org(body: OrgUpdate, actor: UpdateOrg, tx: TxDep) -> OrgRead:
    """Rename, or change the slug (409 ``slug_taken``): admins and owners. ``require_mfa``: owners only, calling
    with an aal2 token (403 ``mfa_required`` otherwise); while on, members need aal2 for everything here but
    leaving."""
    org = await org_service.update_org(tx, actor=actor, changes=body)
    return OrgRead.model_validate(org)


@router.delete(
    "/{org_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="orgs-delete",
)
async def delete_org(actor: DeleteOrg, tx: TxDep) -> None:
    """Delete the organization with its memberships and invitations. Owners only."""
    await org_service.delete_own_org(tx, actor=actor)


@router.get("/{org_id}/members", operation_id="orgs-members-list")
async def list_members(actor: ListMembers, page: PageDep, data: DataDep) -> Page[MemberRead]:
    """Members, in the order they joined."""
    members, total = await org_service.list_members(data, org_id=actor.org_id, limit=page.limit, offset=page.offset)
    return Page(
        items=[MemberRead.model_validate(m) for m in members], total=total, limit=page.limit, offset=page.offset
    )


@router.post(
    "/{org_id}/members",
    status_code=status.HTTP_201_CREATED,
    operation_id="orgs-members-add",
)
async def add_member(body: MemberCreate, actor: AddMember, tx: TxDep) -> MemberRead:
    """Add an existing user by email (404 ``user_not_found``; 409 ``already_member``). Nobody grants a role
    above their own; only owners grant ``owner``."""
    member = await org_service.add_member(tx, actor=actor, email=body.email, role=body.role)
    return MemberRead.model_validate(member)


@router.patch(
    "/{org_id}/members/{user_id}",
    operation_id="orgs-members-update",
)
async def change_member_role(user_id: UUID, body: MemberRoleUpdate, actor: ChangeRole, tx: TxDep) -> MemberRead:
    """Change a member's role. Admins manage members and admins; only owners touch the owner role;
    the last owner cannot be demoted (409 ``last_owner``)."""
    member = await org_service.change_member_role(tx, actor=actor, user_id=user_id, role=body.role)
    return MemberRead.model_validate(member)


@router.delete(
    "/{org_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="orgs-members-remove",
)
async def remove_member(user_id: UUID, actor: RemoveOrLeave, tx: TxDep) -> None:
    """Remove a member (admin+; owners only by owners), or leave (your own user id). The last owner can
    do neither (409 ``last_owner``)."""
    await org_service.remove_member(tx, actor=actor, user_id=user_id)


@router.post(
    "/{org_id}/transfer-ownership",
    operation_id="orgs-transfer-ownership",
)
async def transfer_ownership(body: TransferOwnership, actor: TransferOrg, tx: TxDep) -> MemberRead:
    """The named member becomes owner and the caller becomes admin. Answers the new owner's membership."""
    member = await org_service.transfer_ownership(tx, actor=actor, user_id=body.user_id)
    return MemberRead.model_validate(member)


@router.post(
    "/{org_id}/invitations",
    status_code=status.HTTP_201_CREATED,
    operation_id="orgs-invitations-create",
)
async def create_invitation(
    body: InvitationCreate,
    actor: Invite,
    caller: CurrentCaller,
    request: Request,
    background: BackgroundTasks,
    tx: TxDep,
    settings: SettingsDep,
) -> InvitationCreated:
    """Invite an email address. The token is in this answer (once) and in the mail sent to the address.
    Re-inviting an email with a pending invitation revokes that one; a member's email is 409."""
    invitation, token, org_name = await org_service.create_invitation(
        tx, settings, actor=actor, email=body.email, role=body.role
    )
    inviter = caller.user.full_name or caller.user.email
    if caller.api_key is not None:
        inviter = f"{inviter} (API key “{caller.api_key.name}”)"
    mail.send_invitation(
        request,
        background,
        to=invitation.email,
        token=token,
        inviter=inviter,
        org_name=org_name,
        role=invitation.role,
    )
    return InvitationCreated.model_validate({**InvitationRead.model_validate(invitation).model_dump(), "token": token})


@router.get("/{org_id}/invitations", operation_id="orgs-invitations-list")
async def list_invitations(actor: ListInvitations, page: PageDep, data: DataDep) -> Page[InvitationRead]:
    """Pending invitations (not accepted, revoked or expired), newest first; never their tokens."""
    invitations, total = await org_service.list_invitations(
        data, org_id=actor.org_id, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[InvitationRead.model_validate(i) for i in invitations],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.delete(
    "/{org_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="orgs-invitations-revoke",
)
async def revoke_invitation(invitation_id: UUID, actor: RevokeInvitation, tx: TxDep) -> None:
    """Revoke a pending invitation: its token stops working."""
    await org_service.revoke_invitation(tx, actor=actor, invitation_id=invitation_id)


@router.get("/{org_id}/audit-events", operation_id="orgs-audit-events-list")
async def list_audit_events(actor: ViewAudit, page: PageDep, data: DataDep) -> Page[AuditEventRead]:
    """This organization's audit events, newest first. Admins and owners."""
    events, total = await org_service.list_org_audit_events(
        data, org_id=actor.org_id, limit=page.limit, offset=page.offset
    )
    return Page(
        items=[AuditEventRead.model_validate(e) for e in events], total=total, limit=page.limit, offset=page.offset
    )


@router.post(
    "/{org_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    operation_id="orgs-api-keys-create",
)
async def create_api_key(body: ApiKeyCreate, actor: CreateApiKey, tx: TxDep, settings: SettingsDep) -> ApiKeyCreated:
    """Create an organization API key (admins and owners, calling as themselves; with aal2 where the organization
    requires MFA). ``key`` is in this answer only: store it now. Its role is ``admin`` or ``member``, never above
    the creator's; it lives until revoked or expired, and while its creator stays an admin or owner here."""
    api_key, key = await api_keys.create_api_key(
        tx, settings, actor=actor, name=body.name, role=body.role, expires_in_days=body.expires_in_days
    )
    return ApiKeyCreated.model_validate({**ApiKeyRead.model_validate(api_key).model_dump(), "key": key})


@router.get(
    "/{org_id}/api-keys",
    operation_id="orgs-api-keys-list",
)
async def list_api_keys(actor: ListApiKeys, page: PageDep, data: DataDep) -> Page[ApiKeyRead]:
    """The organization's keys that are not revoked (expired ones included), newest first; never the keys."""
    keys, total = await api_keys.list_api_keys(data, org_id=actor.org_id, limit=page.limit, offset=page.offset)
    return Page(items=[ApiKeyRead.model_validate(k) for k in keys], total=total, limit=page.limit, offset=page.offset)


@router.delete(
    "/{org_id}/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="orgs-api-keys-revoke",
)
async def revoke_api_key(key_id: UUID, actor: RevokeApiKey, tx: TxDep) -> None:
    """Revoke a key (any admin or owner, any key of the organization): refused on its very next use, on every
    worker (401 ``invalid_api_key``)."""
    await api_keys.revoke_api_key(tx, actor=actor, key_id=key_id)


@invitations_router.post(
    "/accept",
    operation_id="invitations-accept",
)
async def accept_invitation(body: InvitationAccept, user: CurrentUser, tx: TxDep) -> MembershipRead:
    """Join an organization with an invitation token (404 unknown, expired, revoked or used; 403 when the
    caller's email is not the invited one; 409 already a member). Accepting verifies the caller's email."""
    member = await org_service.accept_invitation(tx, user=user, token=body.token)
    return MembershipRead.model_validate(member)
