"""Who may do what in an organization: pure functions, no I/O, asked by the dependencies and the service.

Roles rank ``owner`` > ``admin`` > ``member``. The whole rule set (docs/ORGANIZATIONS.md has it as a table):

- A non-member gets ``NOT_FOUND`` for everything (the organization stays invisible); a member lacking the
  action's minimum role gets ``FORBIDDEN``.
- Admins manage members and admins, never owners; only owners grant, revoke or remove the owner role.
- Nobody grants a role above their own (this includes inviting with a role, and revoking such an invitation).
- The last owner can neither leave, be removed, nor be demoted (``removes_last_owner``).
- Superusers get no special powers here: their membership role is all that counts (they use /admin).
"""

from __future__ import annotations

from enum import StrEnum

from app.orgs.exceptions import InsufficientRoleError, OrgNotFoundError
from app.orgs.models import OrgRole

RANK: dict[OrgRole, int] = {OrgRole.MEMBER: 1, OrgRole.ADMIN: 2, OrgRole.OWNER: 3}


class Action(StrEnum):
    VIEW_ORG = "view_org"
    LIST_MEMBERS = "list_members"
    LEAVE = "leave"
    UPDATE_ORG = "update_org"
    ADD_MEMBER = "add_member"
    CHANGE_ROLE = "change_role"
    REMOVE_MEMBER = "remove_member"
    INVITE = "invite"
    LIST_INVITATIONS = "list_invitations"
    REVOKE_INVITATION = "revoke_invitation"
    VIEW_AUDIT = "view_audit"
    DELETE_ORG = "delete_org"
    TRANSFER_OWNERSHIP = "transfer_ownership"


class Verdict(StrEnum):
    ALLOW = "allow"
    NOT_FOUND = "not_found"  # not a member: answer as if the organization did not exist
    FORBIDDEN = "forbidden"  # a member, but the role does not allow it


MINIMUM_ROLE: dict[Action, OrgRole] = {
    Action.VIEW_ORG: OrgRole.MEMBER,
    Action.LIST_MEMBERS: OrgRole.MEMBER,
    Action.LEAVE: OrgRole.MEMBER,
    Action.UPDATE_ORG: OrgRole.ADMIN,
    Action.ADD_MEMBER: OrgRole.ADMIN,
    Action.CHANGE_ROLE: OrgRole.ADMIN,
    Action.REMOVE_MEMBER: OrgRole.ADMIN,
    Action.INVITE: OrgRole.ADMIN,
    Action.LIST_INVITATIONS: OrgRole.ADMIN,
    Action.REVOKE_INVITATION: OrgRole.ADMIN,
    Action.VIEW_AUDIT: OrgRole.ADMIN,
    Action.DELETE_ORG: OrgRole.OWNER,
    Action.TRANSFER_OWNERSHIP: OrgRole.OWNER,
}

# Actions whose answer also depends on a role: the role granted (``role=``) and/or the target's (``target=``).
_GRANTS = {Action.ADD_MEMBER, Action.INVITE, Action.REVOKE_INVITATION, Action.CHANGE_ROLE}
_TARGETS = {Action.CHANGE_ROLE, Action.REMOVE_MEMBER}


def actor_role(membership_role: str | None, *, is_superuser: bool) -> OrgRole | None:
    """The role the rules see. ``is_superuser`` is deliberately ignored: under /organizations a superuser
    is whatever their membership says (a non-member superuser gets 404 like anyone); /admin is theirs."""
    del is_superuser
    return None if membership_role is None else OrgRole(membership_role)


def at_least(role: OrgRole | str, minimum: OrgRole) -> bool:
    return RANK[OrgRole(role)] >= RANK[minimum]


def admits(actor: OrgRole | None, minimum: OrgRole) -> Verdict:
    """The gate in front of every organization route."""
    if actor is None:
        return Verdict.NOT_FOUND
    return Verdict.ALLOW if at_least(actor, minimum) else Verdict.FORBIDDEN


def can_grant(actor: OrgRole, role: OrgRole) -> bool:
    """Nobody grants a role above their own; the owner role only by owners."""
    return RANK[role] <= RANK[actor] and (role is not OrgRole.OWNER or actor is OrgRole.OWNER)


def can_manage(actor: OrgRole, target: OrgRole) -> bool:
    """Change or remove someone holding ``target``: admins manage members and admins, owners everyone."""
    return at_least(actor, OrgRole.ADMIN) and (target is not OrgRole.OWNER or actor is OrgRole.OWNER)


def decide(
    actor: OrgRole | None,
    action: Action,
    *,
    target: OrgRole | None = None,
    role: OrgRole | None = None,
) -> Verdict:
    """The answer for ``actor`` doing ``action`` to a member holding ``target``, granting ``role``."""
    gate = admits(actor, MINIMUM_ROLE[action])
    if gate is not Verdict.ALLOW or actor is None:
        return gate
    if action in _GRANTS and role is None:
        raise ValueError(f"{action} needs the role being granted")
    if action in _TARGETS and target is None:
        raise ValueError(f"{action} needs the target's role")
    allowed = True
    if role is not None and action in _GRANTS:
        allowed = can_grant(actor, role)
    if target is not None and action in _TARGETS:
        allowed = allowed and can_manage(actor, target)
    return Verdict.ALLOW if allowed else Verdict.FORBIDDEN


def require(verdict: Verdict) -> None:
    """Turn a verdict into the domain error the API answers with (404 / 403)."""
    if verdict is Verdict.NOT_FOUND:
        raise OrgNotFoundError()
    if verdict is Verdict.FORBIDDEN:
        raise InsufficientRoleError()


def removes_last_owner(target: OrgRole, new_role: OrgRole | None, *, other_owners: int) -> bool:
    """Would demoting (``new_role``) or removing (``None``) this member leave the organization ownerless?
    ``other_owners`` must be counted while the organization is locked (see service._lock_org)."""
    return target is OrgRole.OWNER and new_role is not OrgRole.OWNER and other_owners == 0
