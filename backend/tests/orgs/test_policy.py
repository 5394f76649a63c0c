"""The membership rules as a table: every actor role x action x target role, the expected verdict.

The expectations are written out by hand (not derived from the code under test), one row per case.
"""

from __future__ import annotations

import uuid

import pytest

from app.auth.exceptions import ApiKeyNotAllowedError, MfaRequiredError
from app.orgs import policy
from app.orgs.exceptions import InsufficientRoleError, OrgNotFoundError
from app.orgs.models import OrgRole
from app.orgs.policy import Action, Verdict

M, A, O = OrgRole.MEMBER, OrgRole.ADMIN, OrgRole.OWNER  # noqa: E741
ACTORS: tuple[OrgRole | None, ...] = (None, M, A, O)
ok, no, hidden = Verdict.ALLOW, Verdict.FORBIDDEN, Verdict.NOT_FOUND

# action, target role, granted role -> verdict for: non-member, member, admin, owner
TABLE: list[tuple[Action, OrgRole | None, OrgRole | None, tuple[Verdict, Verdict, Verdict, Verdict]]] = [
    (Action.VIEW_ORG, None, None, (hidden, ok, ok, ok)),
    (Action.LIST_MEMBERS, None, None, (hidden, ok, ok, ok)),
    (Action.LEAVE, None, None, (hidden, ok, ok, ok)),
    (Action.UPDATE_ORG, None, None, (hidden, no, ok, ok)),
    (Action.LIST_INVITATIONS, None, None, (hidden, no, ok, ok)),
    (Action.VIEW_AUDIT, None, None, (hidden, no, ok, ok)),
    (Action.DELETE_ORG, None, None, (hidden, no, no, ok)),
    (Action.TRANSFER_OWNERSHIP, None, None, (hidden, no, no, ok)),
    (Action.SET_REQUIRE_MFA, None, None, (hidden, no, no, ok)),
    # granting a role: adding an existing user, inviting, revoking such an invitation
    (Action.ADD_MEMBER, None, M, (hidden, no, ok, ok)),
    (Action.ADD_MEMBER, None, A, (hidden, no, ok, ok)),
    (Action.ADD_MEMBER, None, O, (hidden, no, no, ok)),
    (Action.INVITE, None, M, (hidden, no, ok, ok)),
    (Action.INVITE, None, A, (hidden, no, ok, ok)),
    (Action.INVITE, None, O, (hidden, no, no, ok)),
    (Action.REVOKE_INVITATION, None, M, (hidden, no, ok, ok)),
    (Action.REVOKE_INVITATION, None, A, (hidden, no, ok, ok)),
    (Action.REVOKE_INVITATION, None, O, (hidden, no, no, ok)),
    # changing a role: target -> new role
    (Action.CHANGE_ROLE, M, M, (hidden, no, ok, ok)),
    (Action.CHANGE_ROLE, M, A, (hidden, no, ok, ok)),
    (Action.CHANGE_ROLE, M, O, (hidden, no, no, ok)),
    (Action.CHANGE_ROLE, A, M, (hidden, no, ok, ok)),
    (Action.CHANGE_ROLE, A, A, (hidden, no, ok, ok)),
    (Action.CHANGE_ROLE, A, O, (hidden, no, no, ok)),
    (Action.CHANGE_ROLE, O, M, (hidden, no, no, ok)),
    (Action.CHANGE_ROLE, O, A, (hidden, no, no, ok)),
    (Action.CHANGE_ROLE, O, O, (hidden, no, no, ok)),
    # removing someone else
    (Action.REMOVE_MEMBER, M, None, (hidden, no, ok, ok)),
    (Action.REMOVE_MEMBER, A, None, (hidden, no, ok, ok)),
    (Action.REMOVE_MEMBER, O, None, (hidden, no, no, ok)),
    # organization API keys (made by people: admins and owners; the key's role is granted, never owner)
    (Action.CREATE_API_KEY, None, M, (hidden, no, ok, ok)),
    (Action.CREATE_API_KEY, None, A, (hidden, no, ok, ok)),
    (Action.CREATE_API_KEY, None, O, (hidden, no, no, ok)),  # the schema refuses owner keys before (422)
    (Action.LIST_API_KEYS, None, None, (hidden, no, ok, ok)),
    (Action.REVOKE_API_KEY, None, None, (hidden, no, ok, ok)),
]

CASES = [
    pytest.param(actor, action, target, role, expected[i], id=f"{actor or 'none'}-{action}-{target}-{role}")
    for action, target, role, expected in TABLE
    for i, actor in enumerate(ACTORS)
]


class TestDecide:
    @pytest.mark.parametrize(("actor", "action", "target", "role", "expected"), CASES)
    def test_table(
        self, actor: OrgRole | None, action: Action, target: OrgRole | None, role: OrgRole | None, expected: Verdict
    ) -> None:
        assert policy.decide(actor, action, target=target, role=role) is expected

    def test_every_action_is_in_the_table(self) -> None:
        assert {row[0] for row in TABLE} == set(Action)

    def test_every_action_has_one_rule(self) -> None:
        assert set(policy.RULES) == set(Action)

    @pytest.mark.parametrize("actor", ACTORS)
    @pytest.mark.parametrize("action", list(Action))
    def test_the_guard_refuses_exactly_what_no_target_allows(self, action: Action, actor: OrgRole | None) -> None:
        """``gate`` (the route's guard) is ``decide`` before the target and the granted role are known."""
        verdicts = {policy.decide(actor, action, target=t, role=r) for t in (M, A, O) for r in (M, A, O)}
        gate = policy.gate(actor, action)
        if gate is ok:
            assert ok in verdicts
        else:
            assert verdicts == {gate}

    def test_missing_granted_role_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="role being granted"):
            policy.decide(A, Action.INVITE)

    def test_missing_target_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="target"):
            policy.decide(O, Action.REMOVE_MEMBER)


class TestRemovalAction:
    def test_own_id_is_leaving(self) -> None:
        me = uuid.uuid4()
        assert policy.removal_action(actor_id=me, user_id=me) is Action.LEAVE

    def test_another_id_is_removing(self) -> None:
        assert policy.removal_action(actor_id=uuid.uuid4(), user_id=uuid.uuid4()) is Action.REMOVE_MEMBER


class TestSuperuser:
    """Superusers get no special powers under /organizations: only their membership counts."""

    @pytest.mark.parametrize("membership", [None, "member", "admin", "owner"])
    def test_superuser_is_their_membership(self, membership: str | None) -> None:
        assert policy.actor_role(membership, is_superuser=True) == policy.actor_role(membership, is_superuser=False)

    @pytest.mark.parametrize("action", list(Action))
    def test_non_member_superuser_sees_nothing(self, action: Action) -> None:
        role = policy.actor_role(None, is_superuser=True)
        assert policy.decide(role, action, target=O, role=M) is Verdict.NOT_FOUND


class TestAdmit:
    """The guard: membership, then the organization's MFA requirement, then the action's minimum role."""

    @pytest.mark.parametrize("actor", ACTORS)
    @pytest.mark.parametrize("action", list(Action))
    def test_without_the_requirement_it_is_the_gate(self, action: Action, actor: OrgRole | None) -> None:
        for has_mfa in (False, True):
            assert policy.admit(actor, action, require_mfa=False, has_mfa=has_mfa) is policy.gate(actor, action)

    @pytest.mark.parametrize("actor", [M, A, O])
    @pytest.mark.parametrize("action", [a for a in Action if a is not Action.LEAVE])
    def test_aal1_member_is_refused_whatever_the_role(self, action: Action, actor: OrgRole) -> None:
        assert policy.admit(actor, action, require_mfa=True, has_mfa=False) is Verdict.MFA_REQUIRED
        assert policy.admit(actor, action, require_mfa=True, has_mfa=True) is policy.gate(actor, action)

    @pytest.mark.parametrize("actor", [M, A, O])
    def test_leaving_is_exempt(self, actor: OrgRole) -> None:
        assert policy.admit(actor, Action.LEAVE, require_mfa=True, has_mfa=False) is ok
        assert [a for a in Action if policy.RULES[a].mfa_exempt] == [Action.LEAVE]

    def test_non_member_still_not_found(self) -> None:
        assert policy.admit(None, Action.VIEW_ORG, require_mfa=True, has_mfa=False) is hidden


# What an organization API key may do (the contract's list), written out here rather than read from RULES.
KEY_ACTIONS = {
    Action.VIEW_ORG,
    Action.LIST_MEMBERS,
    Action.ADD_MEMBER,
    Action.CHANGE_ROLE,
    Action.REMOVE_MEMBER,
    Action.INVITE,
    Action.LIST_INVITATIONS,
    Action.REVOKE_INVITATION,
    Action.VIEW_AUDIT,
}


class TestAdmitApiKey:
    """An API key: its own organization (else NOT_FOUND), the actions keys may do (else KEY_NOT_ALLOWED), its role."""

    def test_the_key_actions(self) -> None:
        assert {a for a in Action if policy.RULES[a].keys} == KEY_ACTIONS

    @pytest.mark.parametrize("role", policy.API_KEY_ROLES)
    @pytest.mark.parametrize("action", list(Action))
    def test_table(self, action: Action, role: OrgRole) -> None:
        verdict = policy.admit(role, action, require_mfa=False, has_mfa=False, api_key=True)
        expected = policy.gate(role, action) if action in KEY_ACTIONS else Verdict.KEY_NOT_ALLOWED
        assert verdict is expected

    @pytest.mark.parametrize("action", list(Action))
    def test_another_organization_is_not_found(self, action: Action) -> None:
        assert policy.admit(None, action, require_mfa=False, has_mfa=False, api_key=True) is hidden

    @pytest.mark.parametrize("action", sorted(KEY_ACTIONS))
    def test_the_mfa_requirement_does_not_apply(self, action: Action) -> None:
        verdict = policy.admit(A, action, require_mfa=True, has_mfa=False, api_key=True)
        assert verdict is policy.gate(A, action)

    def test_no_key_role_touches_an_owner_or_grants_owner(self) -> None:
        assert O not in policy.API_KEY_ROLES
        for role in policy.API_KEY_ROLES:
            assert policy.decide(role, Action.CHANGE_ROLE, target=O, role=M) is not ok
            assert policy.decide(role, Action.REMOVE_MEMBER, target=O) is not ok
            for action in (Action.ADD_MEMBER, Action.INVITE, Action.REVOKE_INVITATION):
                assert policy.decide(role, action, role=O) is not ok

    @pytest.mark.parametrize(("creator", "keeps"), [(M, False), (A, True), (O, True)])
    def test_a_key_lives_while_its_creator_is_admin_or_owner(self, creator: OrgRole, keeps: bool) -> None:
        assert policy.keeps_api_keys(creator) is keeps


class TestRequire:
    def test_not_found(self) -> None:
        with pytest.raises(OrgNotFoundError):
            policy.require(Verdict.NOT_FOUND)

    def test_forbidden(self) -> None:
        with pytest.raises(InsufficientRoleError):
            policy.require(Verdict.FORBIDDEN)

    def test_mfa_required(self) -> None:
        with pytest.raises(MfaRequiredError):
            policy.require(Verdict.MFA_REQUIRED)

    def test_key_not_allowed(self) -> None:
        with pytest.raises(ApiKeyNotAllowedError):
            policy.require(Verdict.KEY_NOT_ALLOWED)

    def test_allow(self) -> None:
        policy.require(Verdict.ALLOW)


class TestLastOwner:
    @pytest.mark.parametrize(
        ("target", "new_role", "other_owners", "expected"),
        [
            (O, None, 0, True),  # the last owner leaves or is removed
            (O, A, 0, True),  # the last owner is demoted
            (O, M, 0, True),
            (O, O, 0, False),  # no change
            (O, None, 1, False),  # another owner remains
            (O, A, 1, False),
            (O, M, 2, False),
            (A, None, 0, False),  # not an owner: never the last one
            (A, M, 0, False),
            (M, None, 0, False),
            (M, A, 0, False),
        ],
    )
    def test_table(self, target: OrgRole, new_role: OrgRole | None, other_owners: int, expected: bool) -> None:
        assert policy.removes_last_owner(target, new_role, other_owners=other_owners) is expected


class TestRanks:
    @pytest.mark.parametrize(
        ("role", "minimum", "expected"),
        [(M, M, True), (M, A, False), (A, M, True), (A, O, False), (O, A, True), (O, O, True)],
    )
    def test_at_least(self, role: OrgRole, minimum: OrgRole, expected: bool) -> None:
        assert policy.at_least(role, minimum) is expected
