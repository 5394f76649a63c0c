"""Organization access as a type in the handler's signature: ``OrgMember``, ``OrgAdmin``, ``OrgOwner``.

Each loads the caller's membership of ``{org_id}`` and asks ``policy``: none -> 404 (the organization stays
invisible, also to superusers), a lower role -> 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

from fastapi import Depends

from app.auth.dependencies import CurrentUser
from app.core.db import SessionDep
from app.orgs import policy
from app.orgs import service as org_service
from app.orgs.models import Membership, OrgRole


def membership_at_least(minimum: OrgRole) -> Callable[..., Awaitable[Membership]]:
    async def dependency(org_id: UUID, user: CurrentUser, session: SessionDep) -> Membership:
        membership = await org_service.find_membership(session, org_id=org_id, user_id=user.id)
        role = policy.actor_role(membership.role if membership else None, is_superuser=user.is_superuser)
        policy.require(policy.admits(role, minimum))
        assert membership is not None
        return membership

    dependency.__name__ = f"org_{minimum}"
    return dependency


OrgMember = Annotated[Membership, Depends(membership_at_least(OrgRole.MEMBER))]
OrgAdmin = Annotated[Membership, Depends(membership_at_least(OrgRole.ADMIN))]
OrgOwner = Annotated[Membership, Depends(membership_at_least(OrgRole.OWNER))]
