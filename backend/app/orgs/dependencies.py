"""Organization access as a type in the handler's signature, named for the action the route performs.

Each alias is built from an ``Action`` of ``policy.RULES`` (the one table): it loads the caller's membership of
``{org_id}`` with the organization's MFA requirement and asks ``policy.admit``: none -> 404 (the organization
stays invisible, also to superusers), an aal1 token where the organization requires MFA -> 403 ``mfa_required``
(but for leaving), a role below the action's minimum -> 403. What depends on a target or a granted role is
decided by the service, which asks ``policy.decide`` with the same action. A route therefore never states a
role of its own.

Checks on the caller rather than on its membership (the token's assurance level for organizations that
require MFA; an API key's own organization and allowed actions, ``keys`` in ``policy.RULES``) belong in
``_authorize``, keyed by the action: every organization route passes through it, and nothing else decides
organization access. It is also the only dependency that accepts an organization API key (``CurrentCaller``);
every other route answers a key 403 ``api_key_not_allowed`` (app/auth/dependencies.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

from fastapi import Depends

from app.auth.dependencies import CurrentCaller, Principal
from app.core.data import Data, DataDep
from app.orgs import policy
from app.orgs import service as org_service
from app.orgs.models import OrgRole
from app.orgs.policy import Action, Actor


async def _authorize(data: Data, org_id: UUID, caller: Principal, action: Action) -> Actor:
    key = caller.api_key
    if key is not None:
        # Its role in its own organization, read with the key (and the creator's current role) by the caller's
        # lookup: no query here. Another organization: as for a non-member.
        role = OrgRole(key.role) if key.org_id == org_id else None
        policy.require(policy.admit(role, action, require_mfa=False, has_mfa=False, api_key=True))
        assert role is not None
        return Actor(org_id=org_id, user_id=caller.user.id, role=role, api_key_id=key.id)
    access = await org_service.find_access(data, org_id=org_id, user_id=caller.user.id)
    role = policy.actor_role(access.role if access else None, is_superuser=caller.user.is_superuser)
    has_mfa = caller.has_mfa  # this API's session's aal, or the Supabase token's aal claim
    policy.require(policy.admit(role, action, require_mfa=access is not None and access.require_mfa, has_mfa=has_mfa))
    assert role is not None  # admit answers NOT_FOUND without a membership
    return Actor(org_id=org_id, user_id=caller.user.id, role=role, has_mfa=has_mfa)


def authorize(action: Action) -> Callable[..., Awaitable[Actor]]:
    """The guard of a route that performs ``action``."""

    async def dependency(org_id: UUID, caller: CurrentCaller, data: DataDep) -> Actor:
        return await _authorize(data, org_id, caller, action)

    dependency.__name__ = f"authorize_{action}"
    return dependency


async def authorize_removal(org_id: UUID, user_id: UUID, caller: CurrentCaller, data: DataDep) -> Actor:
    """``DELETE …/members/{user_id}``: leaving (the caller's own id; a key's creator's) or removing someone else."""
    return await _authorize(data, org_id, caller, policy.removal_action(actor_id=caller.user.id, user_id=user_id))


ViewOrg = Annotated[Actor, Depends(authorize(Action.VIEW_ORG))]
UpdateOrg = Annotated[Actor, Depends(authorize(Action.UPDATE_ORG))]
DeleteOrg = Annotated[Actor, Depends(authorize(Action.DELETE_ORG))]
ListMembers = Annotated[Actor, Depends(authorize(Action.LIST_MEMBERS))]
AddMember = Annotated[Actor, Depends(authorize(Action.ADD_MEMBER))]
ChangeRole = Annotated[Actor, Depends(authorize(Action.CHANGE_ROLE))]
RemoveOrLeave = Annotated[Actor, Depends(authorize_removal)]
TransferOrg = Annotated[Actor, Depends(authorize(Action.TRANSFER_OWNERSHIP))]
Invite = Annotated[Actor, Depends(authorize(Action.INVITE))]
ListInvitations = Annotated[Actor, Depends(authorize(Action.LIST_INVITATIONS))]
RevokeInvitation = Annotated[Actor, Depends(authorize(Action.REVOKE_INVITATION))]
ViewAudit = Annotated[Actor, Depends(authorize(Action.VIEW_AUDIT))]
CreateApiKey = Annotated[Actor, Depends(authorize(Action.CREATE_API_KEY))]
ListApiKeys = Annotated[Actor, Depends(authorize(Action.LIST_API_KEYS))]
RevokeApiKey = Annotated[Actor, Depends(authorize(Action.REVOKE_API_KEY))]
