"""Who may do what in an organization: one table (``RULES``) and pure functions, no I/O, asked by the guards
(app/orgs/dependencies.py) and the service with the same ``Action``.

Roles rank ``owner`` > ``admin`` > ``member``. The whole rule set (docs/ORGANIZATIONS.md has it as a table):

- A non-member gets ``NOT_FOUND`` for everything (the organization stays invisible); a member lacking the
  action's minimum role gets ``FORBIDDEN``.
- Admins manage members and admins, never owners; only owners grant, revoke or remove the owner role.
- Nobody grants a role above their own (this includes inviting with a role, and revoking such an invitation).
- The last owner can neither leave, be removed, nor be demoted (``removes_last_owner``).
- Superusers get no special powers here: their membership role is all that counts (they use /admin).
- An organization that requires MFA answers ``MFA_REQUIRED`` to a member whose token is not aal2, for every
  action but leaving (``admit``); only owners switch the requirement, and only with aal2 themselves.
- An organization API key acts with its own role (``admin`` or ``member``, so never on an owner and never
  granting ``owner``), in its own organization only (any other: ``NOT_FOUND``), and only for the actions whose
  rule says ``keys`` (the rest: ``KEY_NOT_ALLOWED``). It is not a person: no aal, so the MFA requirement does not
  apply to its use; creating one is an admin action of a person like any other (aal2 where MFA is required).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from app.auth.exceptions import ApiKeyNotAllowedError, MfaRequiredError
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
    SET_REQUIRE_MFA = "set_require_mfa"
    CREATE_API_KEY = "create_api_key"
    LIST_API_KEYS = "list_api_keys"
    REVOKE_API_KEY = "revoke_api_key"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on an organization, as the guard (app/orgs/dependencies.py) hands it to the service: the caller
    and the role the guard admitted. A service that must decide on current roles re-reads it under the
    organization's lock (service._locked_actor)."""

    org_id: uuid.UUID
    user_id: uuid.UUID  # for an API key: its creator (the audit log's actor_id)
    role: OrgRole  # for an API key: the key's role
    has_mfa: bool = False  # the caller's token is aal2
    api_key_id: uuid.UUID | None = None  # the organization API key acting, if any (audit: actor_api_key_id)


class Verdict(StrEnum):
    ALLOW = "allow"
    NOT_FOUND = "not_found"  # not a member: answer as if the organization did not exist
    FORBIDDEN = "forbidden"  # a member, but the role does not allow it
    MFA_REQUIRED = "mfa_required"  # a member, but the organization requires an aal2 token and this one is aal1
    KEY_NOT_ALLOWED = "key_not_allowed"  # an API key of this organization, for an action keys may not do


@dataclass(frozen=True, slots=True)
class Rule:
    """One action's row: the minimum role (the route's guard asks it), and whether the answer also depends on
    the role granted (``role=``) or the target's role (``target=``), which only the service knows."""

    minimum: OrgRole
    grants: bool = False
    targets: bool = False
    mfa_exempt: bool = False  # allowed with an aal1 token even where the organization requires MFA
    keys: bool = False  # an organization API key may do it (with the key's role)


# The one table of organization permissions: the guards are built from it (one alias per action) and the
# service asks ``decide`` with the same action, so a route and its service cannot disagree on a role.
RULES: dict[Action, Rule] = {
    Action.VIEW_ORG: Rule(OrgRole.MEMBER, keys=True),
    Action.LIST_MEMBERS: Rule(OrgRole.MEMBER, keys=True),
    Action.LEAVE: Rule(OrgRole.MEMBER, mfa_exempt=True),  # nobody is trapped in an organization
    Action.UPDATE_ORG: Rule(OrgRole.ADMIN),
    Action.ADD_MEMBER: Rule(OrgRole.ADMIN, grants=True, keys=True),
    Action.CHANGE_ROLE: Rule(OrgRole.ADMIN, grants=True, targets=True, keys=True),
    Action.REMOVE_MEMBER: Rule(OrgRole.ADMIN, targets=True, keys=True),
    Action.INVITE: Rule(OrgRole.ADMIN, grants=True, keys=True),
    Action.LIST_INVITATIONS: Rule(OrgRole.ADMIN, keys=True),
    Action.REVOKE_INVITATION: Rule(OrgRole.ADMIN, grants=True, keys=True),
    Action.VIEW_AUDIT: Rule(OrgRole.ADMIN, keys=True),
    Action.DELETE_ORG: Rule(OrgRole.OWNER),
    Action.TRANSFER_OWNERSHIP: Rule(OrgRole.OWNER),
    Action.SET_REQUIRE_MFA: Rule(OrgRole.OWNER),
    # Keys are made and revoked by people only; the key's role is granted (never above the creator's).
    Action.CREATE_API_KEY: Rule(OrgRole.ADMIN, grants=True),
    Action.LIST_API_KEYS: Rule(OrgRole.ADMIN),
    Action.REVOKE_API_KEY: Rule(OrgRole.ADMIN),
}

# The roles a key can be given: never ``owner`` (a key can then never touch an owner nor grant the owner role).
API_KEY_ROLES = (OrgRole.ADMIN, OrgRole.MEMBER)


def actor_role(membership_role: str | None, *, is_superuser: bool) -> OrgRole | None:
    """The role the rules see. ``is_superuser`` is deliberately ignored: under /organizations a superuser
    is whatever their membership says (a non-member superuser gets 404 like anyone); /admin is theirs."""
    del is_superuser
    return None if membership_role is None else OrgRole(membership_role)


def at_least(role: OrgRole | str, minimum: OrgRole) -> bool:
    return RANK[OrgRole(role)] >= RANK[minimum]


def keeps_api_keys(creator_role: OrgRole | str) -> bool:
    """A key lives only while its creator could still create it: an admin or owner of its organization."""
    return at_least(creator_role, RULES[Action.CREATE_API_KEY].minimum)


def removal_action(*, actor_id: uuid.UUID, user_id: uuid.UUID) -> Action:
    """``DELETE …/members/{user_id}`` is leaving when the id is the caller's own, else removing someone. For an
    API key the caller is its creator: a key removing its own creator is leaving, which keys may not do."""
    return Action.LEAVE if user_id == actor_id else Action.REMOVE_MEMBER


def gate(actor: OrgRole | None, action: Action) -> Verdict:
    """The part of ``decide`` that needs no target: membership and the action's minimum role. The route's
    guard asks it before the handler runs; the service asks it again on the role re-read under lock."""
    if actor is None:
        return Verdict.NOT_FOUND
    return Verdict.ALLOW if at_least(actor, RULES[action].minimum) else Verdict.FORBIDDEN


def admit(actor: OrgRole | None, action: Action, *, require_mfa: bool, has_mfa: bool, api_key: bool = False) -> Verdict:
    """The guard's whole answer: membership (NOT_FOUND; for an API key: its own organization), then for a key
    the action's ``keys`` (KEY_NOT_ALLOWED), for a person the organization's MFA requirement (an aal1 caller gets
    MFA_REQUIRED for every action but the exempt ones, whatever their role), then ``gate``."""
    if actor is not None and api_key and not RULES[action].keys:
        return Verdict.KEY_NOT_ALLOWED
    if actor is not None and not api_key and require_mfa and not has_mfa and not RULES[action].mfa_exempt:
        return Verdict.MFA_REQUIRED
    return gate(actor, action)


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
    verdict = gate(actor, action)
    if verdict is not Verdict.ALLOW or actor is None:
        return verdict
    rule = RULES[action]
    if rule.grants and role is None:
        raise ValueError(f"{action} needs the role being granted")
    if rule.targets and target is None:
        raise ValueError(f"{action} needs the target's role")
    allowed = True
    if rule.grants and role is not None:
        allowed = can_grant(actor, role)
    if rule.targets and target is not None:
        allowed = allowed and can_manage(actor, target)
    return Verdict.ALLOW if allowed else Verdict.FORBIDDEN


def require(verdict: Verdict) -> None:
    """Turn a verdict into the domain error the API answers with (404 / 403)."""
    if verdict is Verdict.NOT_FOUND:
        raise OrgNotFoundError()
    if verdict is Verdict.FORBIDDEN:
        raise InsufficientRoleError()
    if verdict is Verdict.MFA_REQUIRED:
        raise MfaRequiredError()
    if verdict is Verdict.KEY_NOT_ALLOWED:
        raise ApiKeyNotAllowedError()


def removes_last_owner(target: OrgRole, new_role: OrgRole | None, *, other_owners: int) -> bool:
    """Would demoting (``new_role``) or removing (``None``) this member leave the organization ownerless?
    ``other_owners`` must be counted while the organization is locked (see service._lock_org)."""
    return target is OrgRole.OWNER and new_role is not OrgRole.OWNER and other_owners == 0
