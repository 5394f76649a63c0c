"""Organizations, memberships, invitations. Every rule question goes to ``policy``; every change of
membership or role is written to the audit log in the same transaction.

Concurrency: whatever may lower the number of owners (demote, remove, leave, transfer) first locks the
organization row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL), then re-reads the caller's membership and
counts owners. Such changes of one organization therefore run one after the other, and each one decides on
committed, current roles. ``NO KEY`` so that inserting memberships (a foreign-key share lock) never waits on it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from app.audit import service as audit
from app.auth.exceptions import MfaRequiredError
from app.core.data import Data, Query, in_session, paged, scalar
from app.core.db import flush_unique, utcnow
from app.core.emails import normalize_email
from app.core.security import hash_token, new_secret_token
from app.core.settings import Settings
from app.core.updates import apply_changes
from app.orgs import api_keys, policy
from app.orgs.exceptions import (
    AlreadyMemberError,
    AlreadyOwnerError,
    InvitationEmailMismatchError,
    InvitationNotFoundError,
    LastOwnerError,
    MemberNotFoundError,
    OrgNotFoundError,
    SlugTakenError,
)
from app.orgs.models import Invitation, Membership, Organization, OrgRole
from app.orgs.policy import Action, Actor
from app.orgs.schemas import OrgUpdate
from app.users import service as user_service
from app.users.exceptions import UserNotFoundError
from app.users.models import User, UserRow

SLUG_MAX_BASE = 90  # room for a "-<n>" suffix within the column's 100 characters
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Member:
    org_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class OrgWithRole:
    id: uuid.UUID
    name: str
    slug: str
    require_mfa: bool
    created_at: datetime
    updated_at: datetime
    role: str


@dataclass(frozen=True, slots=True)
class UserMembership:
    org_id: uuid.UUID
    name: str
    slug: str
    role: str
    joined_at: datetime


def _with_role(org: Organization, role: str) -> OrgWithRole:
    return OrgWithRole(
        id=org.id,
        name=org.name,
        slug=org.slug,
        require_mfa=org.require_mfa,
        created_at=org.created_at,
        updated_at=org.updated_at,
        role=role,
    )


# --- slugs ---------------------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """Lower-case a-z0-9 and single hyphens; accents folded (``Café Ünïon`` -> ``cafe-union``)."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = _SLUG_JUNK.sub("-", ascii_text).strip("-")[:SLUG_MAX_BASE].strip("-")
    return slug or "org"


async def _free_slug(session: AsyncSession, base: str) -> str:
    """``base``, or ``base-<n>`` with the smallest free n >= 2."""
    taken = set(
        await session.scalars(
            select(Organization.slug).where((Organization.slug == base) | Organization.slug.like(f"{base}-%"))
        )
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# --- lookups -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """What the organization guard needs to know: the caller's role there and the organization's policy."""

    role: str
    require_mfa: bool


_ACCESS = Query(
    select(Membership.role, Organization.require_mfa)
    .join(Organization, Organization.id == Membership.org_id)
    .where(Membership.org_id == bindparam("org_id"), Membership.user_id == bindparam("user_id")),
    Access,
)


async def find_access(data: Data, *, org_id: uuid.UUID, user_id: uuid.UUID) -> Access | None:
    """The caller's role in the organization and whether it requires MFA: one statement; None for a non-member."""
    return await data.one(_ACCESS, org_id=org_id, user_id=user_id)


async def find_membership(session: AsyncSession, *, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return await session.scalar(
        select(Membership)
        .where(Membership.org_id == org_id, Membership.user_id == user_id)
        .execution_options(populate_existing=True)
    )


async def get_membership(session: AsyncSession, *, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    membership = await find_membership(session, org_id=org_id, user_id=user_id)
    if membership is None:
        raise MemberNotFoundError()
    return membership


async def get_org(session: AsyncSession, org_id: uuid.UUID) -> Organization:
    org = await session.get(Organization, org_id)
    if org is None:
        raise OrgNotFoundError()
    return org


async def _member(session: AsyncSession, membership: Membership) -> Member:
    user = await session.get(User, membership.user_id)
    assert user is not None  # the foreign key guarantees it
    return Member(
        org_id=membership.org_id,
        user_id=membership.user_id,
        email=user.email,
        full_name=user.full_name,
        role=membership.role,
        joined_at=membership.created_at,
    )


async def _lock_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    locked = await session.scalar(
        select(Organization.id).where(Organization.id == org_id).with_for_update(key_share=True)
    )
    if locked is None:
        raise OrgNotFoundError()


async def _locked_actor(session: AsyncSession, actor: Actor) -> OrgRole | None:
    """Lock the organization, then the caller's current role (it may have changed since the request began). For
    an API key: the key's role while its creator still holds keys there (else the key died meanwhile)."""
    await _lock_org(session, actor.org_id)
    fresh = await find_membership(session, org_id=actor.org_id, user_id=actor.user_id)
    if fresh is None:
        return None
    if actor.api_key_id is not None:
        return actor.role if policy.keeps_api_keys(fresh.role) else None
    return OrgRole(fresh.role)


async def _other_owners(session: AsyncSession, *, org_id: uuid.UUID, besides: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.org_id == org_id, Membership.role == OrgRole.OWNER, Membership.user_id != besides)
    )
    return int(count or 0)


async def _ensure_owner_remains(session: AsyncSession, *, target: Membership, new_role: OrgRole | None) -> None:
    """Call with the organization locked."""
    other = await _other_owners(session, org_id=target.org_id, besides=target.user_id)
    if policy.removes_last_owner(OrgRole(target.role), new_role, other_owners=other):
        raise LastOwnerError()


# --- organizations -------------------------------------------------------------------------------------


async def create_org(
    session: AsyncSession, *, owner_id: uuid.UUID, name: str, slug: str | None, ip_address: str | None = None
) -> OrgWithRole:
    """The creator becomes the owner. A given slug that is taken is 409; a generated one gets a suffix."""
    if slug is not None:
        org = Organization(name=name, slug=slug)
        if not await flush_unique(session, org):
            raise SlugTakenError()
    else:
        base = slugify(name)
        org = Organization(name=name, slug=await _free_slug(session, base))
        attempts = 0
        while not await flush_unique(session, org):  # a concurrent creator took it meanwhile
            attempts += 1
            if attempts > 5:
                raise SlugTakenError()
            org = Organization(name=name, slug=f"{base}-{secrets.token_hex(3)}")
    session.add(Membership(org_id=org.id, user_id=owner_id, role=OrgRole.OWNER))
    await audit.record(
        session,
        "org.created",
        actor_id=owner_id,
        subject_user_id=owner_id,
        org_id=org.id,
        ip_address=ip_address,
        details={"name": org.name, "slug": org.slug},
    )
    await session.flush()
    return _with_role(org, OrgRole.OWNER)


_ORG_COLUMNS = (
    Organization.id,
    Organization.name,
    Organization.slug,
    Organization.require_mfa,
    Organization.created_at,
    Organization.updated_at,
)
_MY_ORGS_COUNT = Query(
    select(func.count()).select_from(Membership).where(Membership.user_id == bindparam("user_id")), scalar
)
_MY_ORGS = Query(
    paged(select(*_ORG_COLUMNS, Membership.role))
    .join(Membership, Membership.org_id == Organization.id)
    .where(Membership.user_id == bindparam("user_id"))
    .order_by(Membership.created_at, Organization.id),
    OrgWithRole,
)
_ORG = Query(
    select(*_ORG_COLUMNS, bindparam("role", type_=String)).where(Organization.id == bindparam("org_id")), OrgWithRole
)


async def list_my_orgs(data: Data, *, user_id: uuid.UUID, limit: int, offset: int) -> tuple[list[OrgWithRole], int]:
    return await data.page(_MY_ORGS_COUNT, _MY_ORGS, user_id=user_id, limit=limit, offset=offset)


async def read_org(data: Data, *, actor: Actor) -> OrgWithRole:
    org = await data.one(_ORG, org_id=actor.org_id, role=str(actor.role))
    if org is None:  # deleted since the guard read the membership
        raise OrgNotFoundError()
    return org


async def update_org(
    session: AsyncSession, *, actor: Actor, changes: OrgUpdate, ip_address: str | None = None
) -> OrgWithRole:
    """Rename, new slug (admins+); ``require_mfa`` only by an owner calling with aal2 (turning it on without a
    second factor oneself is refused, so the switch never locks out the one who set it)."""
    org = await get_org(session, actor.org_id)
    if changes.require_mfa is not None and changes.require_mfa != org.require_mfa:
        policy.require(policy.decide(actor.role, Action.SET_REQUIRE_MFA))
        if not actor.has_mfa:
            raise MfaRequiredError("Turning on require_mfa needs a session signed in with a second factor (aal2).")
        org.require_mfa = changes.require_mfa
        await audit.record(
            session,
            "org.require_mfa_changed",
            actor_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            org_id=org.id,
            ip_address=ip_address,
            details={"require_mfa": changes.require_mfa},
        )
    applied = apply_changes(org, changes, handled={"require_mfa"})
    if applied:
        if not await flush_unique(session, org):
            raise SlugTakenError()
        await audit.record(
            session,
            "org.updated",
            actor_id=actor.user_id,
            actor_api_key_id=actor.api_key_id,
            org_id=org.id,
            ip_address=ip_address,
            details={"changes": applied},
        )
    return _with_role(org, actor.role)


async def delete_org(
    session: AsyncSession, org_id: uuid.UUID, actor_id: uuid.UUID | None, *, ip_address: str | None = None
) -> None:
    """Delete an organization with its memberships and invitations (foreign-key cascades), in the caller's
    transaction. Also what /admin uses: the caller has checked who may do it. 404 if it does not exist."""
    org = await get_org(session, org_id)
    details = {"name": org.name, "slug": org.slug}
    members = await session.scalar(select(func.count()).select_from(Membership).where(Membership.org_id == org_id))
    await session.execute(delete(Organization).where(Organization.id == org_id))
    session.expunge(org)
    await audit.record(
        session,
        "org.deleted",
        actor_id=actor_id,
        org_id=org_id,
        ip_address=ip_address,
        details={**details, "members": int(members or 0)},
    )
    await session.flush()


async def delete_own_org(session: AsyncSession, *, actor: Actor, ip_address: str | None = None) -> None:
    role = await _locked_actor(session, actor)
    policy.require(policy.decide(role, Action.DELETE_ORG))
    await delete_org(session, actor.org_id, actor.user_id, ip_address=ip_address)


# --- members -------------------------------------------------------------------------------------------


_MEMBERS_COUNT = Query(
    select(func.count()).select_from(Membership).where(Membership.org_id == bindparam("org_id")), scalar
)
_MEMBERS = Query(
    paged(
        select(
            Membership.org_id, Membership.user_id, User.email, User.full_name, Membership.role, Membership.created_at
        )
    )
    .join(User, User.id == Membership.user_id)
    .where(Membership.org_id == bindparam("org_id"))
    .order_by(Membership.created_at, Membership.user_id),
    Member,
)


async def list_members(data: Data, *, org_id: uuid.UUID, limit: int, offset: int) -> tuple[list[Member], int]:
    return await data.page(_MEMBERS_COUNT, _MEMBERS, org_id=org_id, limit=limit, offset=offset)


async def add_member(
    session: AsyncSession, *, actor: Actor, email: str, role: OrgRole, ip_address: str | None = None
) -> Member:
    """Add an existing user (by email): 404 ``user_not_found``, 409 ``already_member``."""
    policy.require(policy.decide(actor.role, Action.ADD_MEMBER, role=role))
    user = await user_service.find_user_by_email(in_session(session), email)
    if user is None:
        raise UserNotFoundError("No user with this email exists; invite them instead.")
    if await find_membership(session, org_id=actor.org_id, user_id=user.id) is not None:
        raise AlreadyMemberError()
    membership = Membership(org_id=actor.org_id, user_id=user.id, role=role)
    if not await flush_unique(session, membership):
        raise AlreadyMemberError()
    await audit.record(
        session,
        "member.added",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        subject_user_id=user.id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"role": role},
    )
    return await _member(session, membership)


async def change_member_role(
    session: AsyncSession, *, actor: Actor, user_id: uuid.UUID, role: OrgRole, ip_address: str | None = None
) -> Member:
    actor_role = await _locked_actor(session, actor)
    policy.require(policy.gate(actor_role, Action.CHANGE_ROLE))
    target = await get_membership(session, org_id=actor.org_id, user_id=user_id)
    previous = OrgRole(target.role)
    policy.require(policy.decide(actor_role, Action.CHANGE_ROLE, target=previous, role=role))
    if previous is role:
        return await _member(session, target)
    await _ensure_owner_remains(session, target=target, new_role=role)
    target.role = role
    if policy.keeps_api_keys(previous) and not policy.keeps_api_keys(role):
        await api_keys.revoke_keys_of(
            session, actor=actor, user_id=user_id, reason="creator_demoted", ip_address=ip_address
        )
    await audit.record(
        session,
        "member.role_changed",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        subject_user_id=user_id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"from": previous, "to": role},
    )
    await session.flush()
    return await _member(session, target)


async def remove_member(
    session: AsyncSession, *, actor: Actor, user_id: uuid.UUID, ip_address: str | None = None
) -> None:
    """An admin+ removes someone, or a member removes themself (leaving)."""
    action = policy.removal_action(actor_id=actor.user_id, user_id=user_id)
    leaving = action is Action.LEAVE
    actor_role = await _locked_actor(session, actor)
    policy.require(policy.gate(actor_role, action))
    target = await get_membership(session, org_id=actor.org_id, user_id=user_id)
    policy.require(policy.decide(actor_role, action, target=OrgRole(target.role)))
    await _ensure_owner_remains(session, target=target, new_role=None)
    role = target.role
    await session.delete(target)
    if policy.keeps_api_keys(role):
        reason = "creator_left" if leaving else "creator_removed"
        await api_keys.revoke_keys_of(session, actor=actor, user_id=user_id, reason=reason, ip_address=ip_address)
    await audit.record(
        session,
        "member.left" if leaving else "member.removed",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        subject_user_id=user_id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"role": role},
    )
    await session.flush()


async def transfer_ownership(
    session: AsyncSession, *, actor: Actor, user_id: uuid.UUID, ip_address: str | None = None
) -> Member:
    """The named member becomes owner and the caller admin. Returns the new owner's membership."""
    actor_role = await _locked_actor(session, actor)
    policy.require(policy.decide(actor_role, Action.TRANSFER_OWNERSHIP))
    if user_id == actor.user_id:
        raise AlreadyOwnerError()
    target = await get_membership(session, org_id=actor.org_id, user_id=user_id)
    caller = await get_membership(session, org_id=actor.org_id, user_id=actor.user_id)
    previous = target.role
    target.role = OrgRole.OWNER
    caller.role = OrgRole.ADMIN
    await audit.record(
        session,
        "org.ownership_transferred",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        subject_user_id=user_id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"new_owner_previous_role": previous, "previous_owner_new_role": OrgRole.ADMIN},
    )
    await session.flush()
    return await _member(session, target)


# --- invitations ---------------------------------------------------------------------------------------


def _pending(now: datetime | ColumnElement[datetime]) -> tuple[ColumnElement[bool], ...]:
    return (Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None), Invitation.expires_at > now)


async def create_invitation(
    session: AsyncSession,
    settings: Settings,
    *,
    actor: Actor,
    email: str,
    role: OrgRole,
    ip_address: str | None = None,
) -> tuple[Invitation, str, Organization]:
    """A new invitation and its token (returned once, stored hashed). A pending invitation for the same
    email is revoked and replaced (re-inviting re-sends); a member's email is 409 ``already_member``."""
    email = normalize_email(email)
    actor_role = await _locked_actor(session, actor)  # locks: one pending invitation per email, even in races
    policy.require(policy.decide(actor_role, Action.INVITE, role=role))
    existing = await user_service.find_user_by_email(in_session(session), email)
    if existing is not None and await find_membership(session, org_id=actor.org_id, user_id=existing.id):
        raise AlreadyMemberError()
    now = utcnow()
    replaced = list(
        await session.scalars(
            select(Invitation.id).where(Invitation.org_id == actor.org_id, Invitation.email == email, *_pending(now))
        )
    )
    if replaced:
        await session.execute(
            update(Invitation)
            .where(Invitation.id.in_(replaced))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        for invitation_id in replaced:
            await audit.record(
                session,
                "invitation.revoked",
                actor_id=actor.user_id,
                actor_api_key_id=actor.api_key_id,
                org_id=actor.org_id,
                ip_address=ip_address,
                details={"invitation_id": str(invitation_id), "email": email, "reason": "replaced"},
            )
    token = new_secret_token()
    invitation = Invitation(
        org_id=actor.org_id,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=actor.user_id,
        created_at=now,
        expires_at=now + timedelta(days=settings.INVITATION_EXPIRE_DAYS),
    )
    session.add(invitation)
    await session.flush()
    await audit.record(
        session,
        "invitation.created",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        subject_user_id=existing.id if existing else None,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"invitation_id": str(invitation.id), "email": email, "role": role},
    )
    return invitation, token, await get_org(session, actor.org_id)


@dataclass(frozen=True, slots=True)
class InvitationRow:
    id: uuid.UUID
    email: str
    role: str
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


_PENDING_OF_ORG = (Invitation.org_id == bindparam("org_id"), *_pending(bindparam("now")))
_INVITATIONS_COUNT = Query(select(func.count()).select_from(Invitation).where(*_PENDING_OF_ORG), scalar)
_INVITATIONS = Query(
    paged(
        select(
            Invitation.id,
            Invitation.email,
            Invitation.role,
            Invitation.invited_by,
            Invitation.created_at,
            Invitation.expires_at,
        )
    )
    .where(*_PENDING_OF_ORG)
    .order_by(Invitation.created_at.desc(), Invitation.id),
    InvitationRow,
)


async def list_invitations(
    data: Data, *, org_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[InvitationRow], int]:
    """Pending invitations only (not accepted, revoked or expired), newest first."""
    return await data.page(_INVITATIONS_COUNT, _INVITATIONS, org_id=org_id, now=utcnow(), limit=limit, offset=offset)


async def revoke_invitation(
    session: AsyncSession, *, actor: Actor, invitation_id: uuid.UUID, ip_address: str | None = None
) -> None:
    """404 unless it belongs to this organization and is neither accepted nor revoked."""
    invitation = await session.scalar(
        select(Invitation).where(
            Invitation.id == invitation_id,
            Invitation.org_id == actor.org_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
    )
    if invitation is None:
        raise InvitationNotFoundError()
    policy.require(policy.decide(actor.role, Action.REVOKE_INVITATION, role=OrgRole(invitation.role)))
    revoked = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation_id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(Invitation.id)
        .execution_options(synchronize_session=False)
    )
    if revoked.scalar_one_or_none() is None:  # accepted or revoked meanwhile
        raise InvitationNotFoundError()
    await audit.record(
        session,
        "invitation.revoked",
        actor_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        org_id=actor.org_id,
        ip_address=ip_address,
        details={"invitation_id": str(invitation_id), "email": invitation.email, "role": invitation.role},
    )


async def accept_invitation(
    session: AsyncSession, *, user: UserRow, token: str, ip_address: str | None = None
) -> Member:
    """Join with an invitation token. Never marks the email verified: the inviter was handed the token too (the
    201 answer shows it), so holding it proves nothing about the mailbox (docs/SECURITY.md)."""
    now = utcnow()
    invitation = await session.scalar(
        select(Invitation).where(Invitation.token_hash == hash_token(token), *_pending(now))
    )
    if invitation is None:
        raise InvitationNotFoundError()
    if user.email != invitation.email:
        raise InvitationEmailMismatchError()
    if await find_membership(session, org_id=invitation.org_id, user_id=user.id) is not None:
        raise AlreadyMemberError()
    # The conditional UPDATE is the single-use guarantee: of two concurrent accepts, one matches no row.
    accepted = await session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, *_pending(now))
        .values(accepted_at=now, accepted_by=user.id)
        .returning(Invitation.id)
        .execution_options(synchronize_session=False)
    )
    if accepted.scalar_one_or_none() is None:
        raise InvitationNotFoundError()
    membership = Membership(org_id=invitation.org_id, user_id=user.id, role=invitation.role)
    if not await flush_unique(session, membership):
        raise AlreadyMemberError()
    await audit.record(
        session,
        "invitation.accepted",
        actor_id=user.id,
        subject_user_id=user.id,
        org_id=invitation.org_id,
        ip_address=ip_address,
        details={"invitation_id": str(invitation.id), "role": invitation.role},
    )
    await session.flush()
    return await _member(session, membership)


# --- audit ---------------------------------------------------------------------------------------------


async def list_org_audit_events(
    data: Data, *, org_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[audit.AuditEventRow], int]:
    return await audit.list_org_events(data, org_id=org_id, limit=limit, offset=offset)


# --- for the admin domain ------------------------------------------------------------------------------


async def list_user_memberships(session: AsyncSession, user_id: uuid.UUID) -> list[UserMembership]:
    rows = await session.execute(
        select(Organization.id, Organization.name, Organization.slug, Membership.role, Membership.created_at)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.created_at, Organization.id)
    )
    return [
        UserMembership(org_id=org_id, name=name, slug=slug, role=role, joined_at=joined_at)
        for org_id, name, slug, role, joined_at in rows
    ]


@dataclass(frozen=True, slots=True)
class Departure:
    """What deleting a user does to the organizations they belong to (app/users/lifecycle.py), decided with
    those organizations locked: ``alone`` are theirs only (deleted with them); in ``sole_owner`` they are the
    last owner while others remain (409 ``sole_owner``, or deleted too when an admin forces it); from every
    other organization their membership simply goes."""

    alone: list[uuid.UUID]
    sole_owner: list[uuid.UUID]


async def lock_orgs_of(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Lock every organization ``user_id`` belongs to, in id order (two such lockers never deadlock), with the
    lock the last-owner rule takes (``_lock_org``: ``FOR NO KEY UPDATE``): a transfer, demotion, removal or
    departure in those organizations runs wholly before or wholly after the caller's transaction. Returns the
    locked ids (an organization deleted meanwhile is not among them)."""
    member_of = select(Membership.org_id).where(Membership.user_id == user_id).scalar_subquery()
    rows = await session.scalars(
        select(Organization.id)
        .where(Organization.id.in_(member_of))
        .order_by(Organization.id)
        .with_for_update(key_share=True)
    )
    return list(rows)


async def departure(session: AsyncSession, user_id: uuid.UUID) -> Departure:
    """The user's organizations by what their leaving does; call with them locked (``lock_orgs_of``)."""
    other = aliased(Membership)
    others = (
        select(func.count())
        .where(other.org_id == Membership.org_id, other.user_id != user_id)
        .correlate(Membership)
        .scalar_subquery()
    )
    other_owners = (
        select(func.count())
        .where(other.org_id == Membership.org_id, other.user_id != user_id, other.role == OrgRole.OWNER)
        .correlate(Membership)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Membership.org_id, Membership.role, others, other_owners)
        .where(Membership.user_id == user_id)
        .order_by(Membership.org_id)
    )
    alone: list[uuid.UUID] = []
    sole_owner: list[uuid.UUID] = []
    for org_id, role, n_others, n_other_owners in rows:
        if not n_others:
            alone.append(org_id)
        elif policy.removes_last_owner(OrgRole(role), None, other_owners=int(n_other_owners)):
            sole_owner.append(org_id)
    return Departure(alone=alone, sole_owner=sole_owner)
