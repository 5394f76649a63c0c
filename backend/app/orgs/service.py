"""Organizations, memberships, invitations. Every rule question goes to ``policy``; every change of
membership or role is written to the audit log in the same transaction (the request's ``Tx``, app/core/data.py:
Core statements built once, rows handed out as frozen values).

Concurrency: whatever may lower the number of owners (demote, remove, leave, transfer) first locks the
organization row (``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL), then re-reads the caller's membership and
counts owners, each in a statement of its own (a new snapshot once the lock is held). Such changes of one
organization therefore run one after the other, and each one decides on committed, current roles. ``NO KEY`` so
that inserting memberships (a foreign-key share lock) never waits on it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, String, bindparam, delete, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from app.audit import service as audit
from app.auth.exceptions import MfaRequiredError
from app.core.data import Data, Query, Statements, Tx, paged, scalar
from app.core.db import utcnow
from app.core.emails import normalize_email
from app.core.security import hash_token, new_secret_token
from app.core.settings import Settings
from app.core.updates import Update, changed_values, sent_values
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
from app.users.exceptions import UserNotFoundError
from app.users.models import User, UserRow

SLUG_MAX_BASE = 90  # room for a "-<n>" suffix within the column's 100 characters
SLUG_ATTEMPTS = 5  # random suffixes tried when concurrent creators keep taking the generated slug
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


# --- slugs ---------------------------------------------------------------------------------------------


def slugify(name: str) -> str:
    """Lower-case a-z0-9 and single hyphens; accents folded (``Café Ünïon`` -> ``cafe-union``)."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = _SLUG_JUNK.sub("-", ascii_text).strip("-")[:SLUG_MAX_BASE].strip("-")
    return slug or "org"


# ``base`` is slugify's: a-z0-9 and hyphens, nothing LIKE would read as a wildcard.
_SLUGS_LIKE = Query(
    select(Organization.slug).where(
        (Organization.slug == bindparam("base")) | Organization.slug.like(bindparam("pattern"))
    ),
    scalar,
)


async def _free_slug(tx: Statements, base: str) -> str:
    """``base``, or ``base-<n>`` with the smallest free n >= 2."""
    taken = set(await tx.all(_SLUGS_LIKE, base=base, pattern=f"{base}-%"))
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


_MEMBER_COLUMNS = (
    Membership.org_id,
    Membership.user_id,
    User.email,
    User.full_name,
    Membership.role,
    Membership.created_at,
)
_OTHER = aliased(Membership)
_OTHER_OWNERS = (
    select(func.count())
    .select_from(_OTHER)
    .where(_OTHER.org_id == Membership.org_id, _OTHER.role == OrgRole.OWNER, _OTHER.user_id != Membership.user_id)
    .correlate(Membership)
    .scalar_subquery()
)


@dataclass(frozen=True, slots=True)
class Target:
    """A member being changed, read with the organization locked, and how many other owners it has then."""

    member: Member
    other_owners: int


_TARGET = Query(
    select(*_MEMBER_COLUMNS, _OTHER_OWNERS)
    .join(User, User.id == Membership.user_id)
    .where(Membership.org_id == bindparam("org_id"), Membership.user_id == bindparam("user_id")),
    lambda *values: Target(Member(*values[:-1]), int(values[-1])),
)
_LOCK_ORG = Query(
    select(Organization.name).where(Organization.id == bindparam("org_id")).with_for_update(key_share=True), scalar
)
_ROLE = Query(
    select(Membership.role).where(Membership.org_id == bindparam("org_id"), Membership.user_id == bindparam("user_id")),
    scalar,
)
# Bind names never equal a column of the table written (SQLAlchemy reserves those for SET / VALUES).
_OF_MEMBER = (Membership.org_id == bindparam("org"), Membership.user_id == bindparam("member"))
_SET_ROLE = Query(update(Membership).where(*_OF_MEMBER).values(role=bindparam("new_role")), scalar)
_REMOVE = Query(delete(Membership).where(*_OF_MEMBER), scalar)
_ADD = Query(
    insert(Membership).values(
        org_id=bindparam("org"), user_id=bindparam("member"), role=bindparam("new_role"), created_at=bindparam("now")
    ),
    scalar,
)


async def _join(tx: Statements, *, org_id: uuid.UUID, user_id: uuid.UUID, role: str, now: datetime) -> None:
    """A new membership; any constraint refusing it is 409 ``already_member`` (a concurrent add or accept won).
    Raised at once, so the request's transaction rolls back and needs no savepoint (``tx.attempt``) to go on."""
    try:
        await tx.run(_ADD, org=org_id, member=user_id, new_role=role, now=now)
    except IntegrityError:
        raise AlreadyMemberError() from None


async def _target(tx: Statements, *, org_id: uuid.UUID, user_id: uuid.UUID) -> Target:
    target = await tx.one(_TARGET, org_id=org_id, user_id=user_id)
    if target is None:
        raise MemberNotFoundError()
    return target


async def _lock_org(tx: Statements, org_id: uuid.UUID) -> str:
    """Lock the organization row (the last-owner rule's lock); its name. 404 when it is gone."""
    name = await tx.value(_LOCK_ORG, org_id=org_id)
    if name is None:
        raise OrgNotFoundError()
    return str(name)


async def _current_role(tx: Statements, actor: Actor) -> OrgRole | None:
    """The caller's current role (it may have changed since the request began), read after the lock. For an
    API key: the key's role while its creator still holds keys there (else the key died meanwhile)."""
    fresh = await tx.value(_ROLE, org_id=actor.org_id, user_id=actor.user_id)
    if fresh is None:
        return None
    if actor.api_key_id is not None:
        return actor.role if policy.keeps_api_keys(fresh) else None
    return OrgRole(fresh)


async def _locked_actor(tx: Statements, actor: Actor) -> OrgRole | None:
    """Lock the organization, then read the caller's current role."""
    await _lock_org(tx, actor.org_id)
    return await _current_role(tx, actor)


def _ensure_owner_remains(target: Target, new_role: OrgRole | None) -> None:
    """``target`` read with the organization locked."""
    if policy.removes_last_owner(OrgRole(target.member.role), new_role, other_owners=target.other_owners):
        raise LastOwnerError()


# --- organizations -------------------------------------------------------------------------------------


_ORG_COLUMNS = (
    Organization.id,
    Organization.name,
    Organization.slug,
    Organization.require_mfa,
    Organization.created_at,
    Organization.updated_at,
)
# ON CONFLICT DO NOTHING (renders on SQLite too): a taken slug is no row, and the transaction goes on.
_NEW_ORG = Query(
    postgresql.insert(Organization)
    .values(name=bindparam("org_name"), slug=bindparam("org_slug"))
    .on_conflict_do_nothing()
    .returning(*_ORG_COLUMNS, literal(OrgRole.OWNER, String)),  # as its creator sees it
    OrgWithRole,
)


async def create_org(tx: Tx, *, owner_id: uuid.UUID, name: str, slug: str | None) -> OrgWithRole:
    """The creator becomes the owner. A given slug that is taken is 409; a generated one gets a suffix."""
    if slug is not None:
        org = await tx.one(_NEW_ORG, org_name=name, org_slug=slug)
        if org is None:
            raise SlugTakenError()
    else:
        base = slugify(name)
        org = await tx.one(_NEW_ORG, org_name=name, org_slug=await _free_slug(tx, base))
        attempts = 0
        while org is None:  # a concurrent creator took it meanwhile
            attempts += 1
            if attempts > SLUG_ATTEMPTS:
                raise SlugTakenError()
            org = await tx.one(_NEW_ORG, org_name=name, org_slug=f"{base}-{secrets.token_hex(3)}")
    # The owner deleted meanwhile: a foreign-key violation, answered 401 (app/core/errors.py).
    await tx.run(_ADD, org=org.id, member=owner_id, new_role=OrgRole.OWNER, now=utcnow())
    await audit.record(
        tx,
        "org.created",
        actor_id=owner_id,
        subject_user_id=owner_id,
        org_id=org.id,
        details={"name": org.name, "slug": org.slug},
    )
    return org


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
_AS_ROLE = bindparam("role", type_=String)  # the caller's role, handed back with the row
_ORG = Query(select(*_ORG_COLUMNS, _AS_ROLE).where(Organization.id == bindparam("org_id")), OrgWithRole)
_UPDATE_ORG = Update(Organization, returning=(*_ORG_COLUMNS, _AS_ROLE), row=OrgWithRole)


async def list_my_orgs(data: Data, *, user_id: uuid.UUID, limit: int, offset: int) -> tuple[list[OrgWithRole], int]:
    return await data.page(_MY_ORGS_COUNT, _MY_ORGS, user_id=user_id, limit=limit, offset=offset)


async def read_org(data: Data | Statements, *, actor: Actor) -> OrgWithRole:
    org = await data.one(_ORG, org_id=actor.org_id, role=str(actor.role))
    if org is None:  # deleted since the guard read the membership
        raise OrgNotFoundError()
    return org


async def update_org(tx: Tx, *, actor: Actor, changes: OrgUpdate) -> OrgWithRole:
    """Rename, new slug (admins+); ``require_mfa`` only by an owner calling with aal2 (turning it on without a
    second factor oneself is refused, so the switch never locks out the one who set it)."""
    org = await read_org(tx, actor=actor)
    values = changed_values(org, sent_values(Organization, changes, handled={"require_mfa"}))
    mfa_changed = changes.require_mfa is not None and changes.require_mfa != org.require_mfa
    if mfa_changed:
        policy.require(policy.decide(actor.role, Action.SET_REQUIRE_MFA))
        if not actor.has_mfa:
            raise MfaRequiredError("Turning on require_mfa needs a session signed in with a second factor (aal2).")
    if not values and not mfa_changed:
        return org
    query, params = _UPDATE_ORG(org.id, {**values, "require_mfa": changes.require_mfa} if mfa_changed else values)
    try:
        updated = await tx.one(query, role=str(actor.role), **params)
    except IntegrityError:  # the slug's unique key
        raise SlugTakenError() from None
    if updated is None:  # deleted meanwhile
        raise OrgNotFoundError()
    if mfa_changed:
        await audit.record(
            tx, "org.require_mfa_changed", by=actor, org_id=org.id, details={"require_mfa": changes.require_mfa}
        )
    if values:
        await audit.record(tx, "org.updated", by=actor, org_id=org.id, details={"changes": values})
    return updated


@dataclass(frozen=True, slots=True)
class DeletedOrg:
    name: str
    slug: str


_MEMBER_COUNT = (
    select(func.count()).where(Membership.org_id == Organization.id).correlate(Organization).scalar_subquery()
)
_ORG_TO_DELETE = Query(
    select(Organization.name, Organization.slug, _MEMBER_COUNT).where(Organization.id == bindparam("org_id")),
    lambda name, slug, members: (DeletedOrg(name, slug), int(members)),
)
_DELETE_ORG = Query(delete(Organization).where(Organization.id == bindparam("org_id")), scalar)


async def delete_org(tx: Tx, org_id: uuid.UUID, actor_id: uuid.UUID | None) -> DeletedOrg:
    """Delete an organization with its memberships and invitations (foreign-key cascades), in the caller's
    transaction. Also what /admin uses: the caller has checked who may do it. 404 if it does not exist."""
    found = await tx.one(_ORG_TO_DELETE, org_id=org_id)
    if found is None:
        raise OrgNotFoundError()
    org, members = found
    await tx.run(_DELETE_ORG, org_id=org_id)
    await audit.record(
        tx,
        "org.deleted",
        actor_id=actor_id,
        org_id=org_id,
        details={"name": org.name, "slug": org.slug, "members": members},
    )
    return org


async def delete_own_org(tx: Tx, *, actor: Actor) -> None:
    role = await _locked_actor(tx, actor)
    policy.require(policy.decide(role, Action.DELETE_ORG))
    await delete_org(tx, actor.org_id, actor.user_id)


# --- members -------------------------------------------------------------------------------------------


_MEMBERS_COUNT = Query(
    select(func.count()).select_from(Membership).where(Membership.org_id == bindparam("org_id")), scalar
)
_MEMBERS = Query(
    paged(select(*_MEMBER_COLUMNS))
    .join(User, User.id == Membership.user_id)
    .where(Membership.org_id == bindparam("org_id"))
    .order_by(Membership.created_at, Membership.user_id),
    Member,
)


async def list_members(data: Data, *, org_id: uuid.UUID, limit: int, offset: int) -> tuple[list[Member], int]:
    return await data.page(_MEMBERS_COUNT, _MEMBERS, org_id=org_id, limit=limit, offset=offset)


@dataclass(frozen=True, slots=True)
class Person:
    """A user named by email (to add or invite), and whether they already belong to the organization."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_member: bool


_PERSON = Query(
    select(
        User.id,
        User.email,
        User.full_name,
        exists().where(Membership.org_id == bindparam("org_id"), Membership.user_id == User.id),
    ).where(User.email == bindparam("email")),
    Person,
)


async def add_member(tx: Tx, *, actor: Actor, email: str, role: OrgRole) -> Member:
    """Add an existing user (by email): 404 ``user_not_found``, 409 ``already_member``."""
    policy.require(policy.decide(actor.role, Action.ADD_MEMBER, role=role))
    user = await tx.one(_PERSON, org_id=actor.org_id, email=email)
    if user is None:
        raise UserNotFoundError("No user with this email exists; invite them instead.")
    if user.is_member:
        raise AlreadyMemberError()
    now = utcnow()
    await _join(tx, org_id=actor.org_id, user_id=user.id, role=role, now=now)
    await audit.record(
        tx, "member.added", by=actor, subject_user_id=user.id, org_id=actor.org_id, details={"role": role}
    )
    return Member(actor.org_id, user.id, user.email, user.full_name, role, now)


async def change_member_role(tx: Tx, *, actor: Actor, user_id: uuid.UUID, role: OrgRole) -> Member:
    actor_role = await _locked_actor(tx, actor)
    policy.require(policy.gate(actor_role, Action.CHANGE_ROLE))
    target = await _target(tx, org_id=actor.org_id, user_id=user_id)
    previous = OrgRole(target.member.role)
    policy.require(policy.decide(actor_role, Action.CHANGE_ROLE, target=previous, role=role))
    if previous is role:
        return target.member
    _ensure_owner_remains(target, role)
    await tx.run(_SET_ROLE, org=actor.org_id, member=user_id, new_role=role)
    if policy.keeps_api_keys(previous) and not policy.keeps_api_keys(role):
        await api_keys.revoke_keys_of(tx, actor=actor, user_id=user_id, reason="creator_demoted")
    await audit.record(
        tx,
        "member.role_changed",
        by=actor,
        subject_user_id=user_id,
        org_id=actor.org_id,
        details={"from": previous, "to": role},
    )
    return replace(target.member, role=role)


async def remove_member(tx: Tx, *, actor: Actor, user_id: uuid.UUID) -> None:
    """An admin+ removes someone, or a member removes themself (leaving)."""
    action = policy.removal_action(actor_id=actor.user_id, user_id=user_id)
    leaving = action is Action.LEAVE
    actor_role = await _locked_actor(tx, actor)
    policy.require(policy.gate(actor_role, action))
    target = await _target(tx, org_id=actor.org_id, user_id=user_id)
    role = target.member.role
    policy.require(policy.decide(actor_role, action, target=OrgRole(role)))
    _ensure_owner_remains(target, None)
    await tx.run(_REMOVE, org=actor.org_id, member=user_id)
    if policy.keeps_api_keys(role):
        reason = "creator_left" if leaving else "creator_removed"
        await api_keys.revoke_keys_of(tx, actor=actor, user_id=user_id, reason=reason)
    await audit.record(
        tx,
        "member.left" if leaving else "member.removed",
        by=actor,
        subject_user_id=user_id,
        org_id=actor.org_id,
        details={"role": role},
    )


async def transfer_ownership(tx: Tx, *, actor: Actor, user_id: uuid.UUID) -> Member:
    """The named member becomes owner and the caller admin. Returns the new owner's membership."""
    actor_role = await _locked_actor(tx, actor)
    policy.require(policy.decide(actor_role, Action.TRANSFER_OWNERSHIP))  # the caller is an owner, now
    if user_id == actor.user_id:
        raise AlreadyOwnerError()
    target = await _target(tx, org_id=actor.org_id, user_id=user_id)
    await tx.run(_SET_ROLE, org=actor.org_id, member=user_id, new_role=OrgRole.OWNER)
    await tx.run(_SET_ROLE, org=actor.org_id, member=actor.user_id, new_role=OrgRole.ADMIN)
    await audit.record(
        tx,
        "org.ownership_transferred",
        by=actor,
        subject_user_id=user_id,
        org_id=actor.org_id,
        details={"new_owner_previous_role": target.member.role, "previous_owner_new_role": OrgRole.ADMIN},
    )
    return replace(target.member, role=OrgRole.OWNER)


# --- invitations ---------------------------------------------------------------------------------------


def _pending(now: datetime | ColumnElement[datetime]) -> tuple[ColumnElement[bool], ...]:
    return (Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None), Invitation.expires_at > now)


@dataclass(frozen=True, slots=True)
class InvitationRow:
    id: uuid.UUID
    email: str
    role: str
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


_INVITATION_COLUMNS = (
    Invitation.id,
    Invitation.email,
    Invitation.role,
    Invitation.invited_by,
    Invitation.created_at,
    Invitation.expires_at,
)
_NOW: BindParameter[datetime] = bindparam("now")
_REPLACE_PENDING = Query(
    update(Invitation)
    .where(Invitation.org_id == bindparam("org"), Invitation.email == bindparam("invitee"), *_pending(_NOW))
    .values(revoked_at=_NOW)
    .returning(Invitation.id),
    scalar,
)
_NEW_INVITATION = Query(
    insert(Invitation)
    .values(
        org_id=bindparam("org"),
        email=bindparam("invitee"),
        role=bindparam("new_role"),
        token_hash=bindparam("digest"),
        invited_by=bindparam("inviter"),
        created_at=_NOW,
        expires_at=bindparam("expires"),
    )
    .returning(*_INVITATION_COLUMNS),
    InvitationRow,
)


async def create_invitation(
    tx: Tx, settings: Settings, *, actor: Actor, email: str, role: OrgRole
) -> tuple[InvitationRow, str, str]:
    """A new invitation, its token (returned once, stored hashed) and the organization's name. A pending
    invitation for the same email is revoked and replaced (re-inviting re-sends); a member's email is 409
    ``already_member``."""
    email = normalize_email(email)
    org_name = await _lock_org(tx, actor.org_id)  # one pending invitation per email, even in races
    policy.require(policy.decide(await _current_role(tx, actor), Action.INVITE, role=role))
    existing = await tx.one(_PERSON, org_id=actor.org_id, email=email)
    if existing is not None and existing.is_member:
        raise AlreadyMemberError()
    now = utcnow()
    for invitation_id in await tx.all(_REPLACE_PENDING, org=actor.org_id, invitee=email, now=now):
        await audit.record(
            tx,
            "invitation.revoked",
            by=actor,
            org_id=actor.org_id,
            details={"invitation_id": str(invitation_id), "email": email, "reason": "replaced"},
        )
    token = new_secret_token()
    invitation = await tx.one(
        _NEW_INVITATION,
        org=actor.org_id,
        invitee=email,
        new_role=role,
        digest=hash_token(token),
        inviter=actor.user_id,
        now=now,
        expires=now + timedelta(days=settings.INVITATION_EXPIRE_DAYS),
    )
    assert invitation is not None
    await audit.record(
        tx,
        "invitation.created",
        by=actor,
        subject_user_id=existing.id if existing else None,
        org_id=actor.org_id,
        details={"invitation_id": str(invitation.id), "email": email, "role": role},
    )
    return invitation, token, org_name


_PENDING_OF_ORG = (Invitation.org_id == bindparam("org_id"), *_pending(_NOW))
_INVITATIONS_COUNT = Query(select(func.count()).select_from(Invitation).where(*_PENDING_OF_ORG), scalar)
_INVITATIONS = Query(
    paged(select(*_INVITATION_COLUMNS)).where(*_PENDING_OF_ORG).order_by(Invitation.created_at.desc(), Invitation.id),
    InvitationRow,
)


async def list_invitations(
    data: Data, *, org_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[InvitationRow], int]:
    """Pending invitations only (not accepted, revoked or expired), newest first."""
    return await data.page(_INVITATIONS_COUNT, _INVITATIONS, org_id=org_id, now=utcnow(), limit=limit, offset=offset)


_OPEN = (Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))  # expired ones too: revocable
_OPEN_INVITATION = Query(
    select(Invitation.email, Invitation.role).where(
        Invitation.id == bindparam("invitation_id"), Invitation.org_id == bindparam("org_id"), *_OPEN
    ),
    lambda email, role: (email, role),
)
_REVOKE_INVITATION = Query(
    update(Invitation)
    .where(Invitation.id == bindparam("invitation"), *_OPEN)
    .values(revoked_at=_NOW)
    .returning(Invitation.id),
    scalar,
)


async def revoke_invitation(tx: Tx, *, actor: Actor, invitation_id: uuid.UUID) -> None:
    """404 unless it belongs to this organization and is neither accepted nor revoked."""
    found = await tx.one(_OPEN_INVITATION, invitation_id=invitation_id, org_id=actor.org_id)
    if found is None:
        raise InvitationNotFoundError()
    email, role = found
    policy.require(policy.decide(actor.role, Action.REVOKE_INVITATION, role=OrgRole(role)))
    if await tx.value(_REVOKE_INVITATION, invitation=invitation_id, now=utcnow()) is None:
        raise InvitationNotFoundError()  # accepted or revoked meanwhile
    await audit.record(
        tx,
        "invitation.revoked",
        by=actor,
        org_id=actor.org_id,
        details={"invitation_id": str(invitation_id), "email": email, "role": role},
    )


@dataclass(frozen=True, slots=True)
class _Invited:
    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    role: str
    is_member: bool  # the user accepting already belongs to the organization


_INVITATION_BY_TOKEN = Query(
    select(
        Invitation.id,
        Invitation.org_id,
        Invitation.email,
        Invitation.role,
        exists().where(Membership.org_id == Invitation.org_id, Membership.user_id == bindparam("user_id")),
    ).where(Invitation.token_hash == bindparam("token_hash"), *_pending(_NOW)),
    _Invited,
)
# The conditional UPDATE is the single-use guarantee: of two concurrent accepts, one matches no row.
_ACCEPT = Query(
    update(Invitation)
    .where(Invitation.id == bindparam("invitation"), *_pending(_NOW))
    .values(accepted_at=_NOW, accepted_by=bindparam("accepter"))
    .returning(Invitation.id),
    scalar,
)


async def accept_invitation(tx: Tx, *, user: UserRow, token: str) -> Member:
    """Join with an invitation token. Never marks the email verified: the inviter was handed the token too (the
    201 answer shows it), so holding it proves nothing about the mailbox (docs/SECURITY.md)."""
    now = utcnow()
    invitation = await tx.one(_INVITATION_BY_TOKEN, token_hash=hash_token(token), user_id=user.id, now=now)
    if invitation is None:
        raise InvitationNotFoundError()
    if user.email != invitation.email:
        raise InvitationEmailMismatchError()
    if invitation.is_member:
        raise AlreadyMemberError()
    if await tx.value(_ACCEPT, invitation=invitation.id, accepter=user.id, now=now) is None:
        raise InvitationNotFoundError()
    org_id, role = invitation.org_id, invitation.role
    await _join(tx, org_id=org_id, user_id=user.id, role=role, now=now)
    await audit.record(
        tx,
        "invitation.accepted",
        actor_id=user.id,
        subject_user_id=user.id,
        org_id=org_id,
        details={"invitation_id": str(invitation.id), "role": role},
    )
    return Member(org_id, user.id, user.email, user.full_name, role, now)


# --- audit ---------------------------------------------------------------------------------------------


async def list_org_audit_events(
    data: Data, *, org_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[audit.AuditEventRow], int]:
    return await audit.list_org_events(data, org_id=org_id, limit=limit, offset=offset)


# --- for the admin and users domains -------------------------------------------------------------------


_USER_MEMBERSHIPS = Query(
    select(Organization.id, Organization.name, Organization.slug, Membership.role, Membership.created_at)
    .join(Membership, Membership.org_id == Organization.id)
    .where(Membership.user_id == bindparam("user_id"))
    .order_by(Membership.created_at, Organization.id),
    UserMembership,
)


async def list_user_memberships(data: Data | Statements, user_id: uuid.UUID) -> list[UserMembership]:
    return await data.all(_USER_MEMBERSHIPS, user_id=user_id)


@dataclass(frozen=True, slots=True)
class Departure:
    """What deleting a user does to the organizations they belong to (app/users/lifecycle.py), decided with
    those organizations locked: ``alone`` are theirs only (deleted with them); in ``sole_owner`` they are the
    last owner while others remain (409 ``sole_owner``, or deleted too when an admin forces it); from every
    other organization their membership simply goes."""

    alone: list[uuid.UUID]
    sole_owner: list[uuid.UUID]


_ORGS_OF = Query(
    select(Organization.id)
    .where(Organization.id.in_(select(Membership.org_id).where(Membership.user_id == bindparam("user_id"))))
    .order_by(Organization.id)
    .with_for_update(key_share=True),
    scalar,
)


async def lock_orgs_of(tx: Statements, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Lock every organization ``user_id`` belongs to, in id order (two such lockers never deadlock), with the
    lock the last-owner rule takes (``_lock_org``: ``FOR NO KEY UPDATE``): a transfer, demotion, removal or
    departure in those organizations runs wholly before or wholly after the caller's transaction. Returns the
    locked ids (an organization deleted meanwhile is not among them)."""
    return await tx.all(_ORGS_OF, user_id=user_id)


def _others(*where: ColumnElement[bool]) -> Any:
    return (
        select(func.count())
        .select_from(_OTHER)
        .where(_OTHER.org_id == Membership.org_id, _OTHER.user_id != bindparam("user_id"), *where)
        .correlate(Membership)
        .scalar_subquery()
    )


_DEPARTURE = Query(
    select(Membership.org_id, Membership.role, _others(), _others(_OTHER.role == OrgRole.OWNER))
    .where(Membership.user_id == bindparam("user_id"))
    .order_by(Membership.org_id),
    lambda *values: values,
)


async def departure(tx: Statements, user_id: uuid.UUID) -> Departure:
    """The user's organizations by what their leaving does; call with them locked (``lock_orgs_of``)."""
    alone: list[uuid.UUID] = []
    sole_owner: list[uuid.UUID] = []
    for org_id, role, n_others, n_other_owners in await tx.all(_DEPARTURE, user_id=user_id):
        if not n_others:
            alone.append(org_id)
        elif policy.removes_last_owner(OrgRole(role), None, other_owners=int(n_other_owners)):
            sole_owner.append(org_id)
    return Departure(alone=alone, sole_owner=sole_owner)
