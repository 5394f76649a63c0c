"""Organization test data, made through the service layer and committed like a request would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.orgs import api_keys
from app.orgs import service as org_service
from app.orgs.models import Invitation, Membership, OrgRole
from app.orgs.policy import Actor
from app.state import state_of
from tests.factories import TestUser, create_user

API = "/api/v1"


async def make_org(app: FastAPI, owner: TestUser, *, name: str = "Acme", slug: str | None = None) -> uuid.UUID:
    async with state_of(app).data.transaction() as tx:
        org = await org_service.create_org(tx, owner_id=owner.id, name=name, slug=slug)
    return org.id


async def add_membership(app: FastAPI, org_id: uuid.UUID, user_id: uuid.UUID, role: OrgRole | str) -> None:
    async with state_of(app).sessionmaker() as session:
        session.add(Membership(org_id=org_id, user_id=user_id, role=OrgRole(role)))
        await session.commit()


async def member_of(
    app: FastAPI, org_id: uuid.UUID, role: OrgRole | str, *, logged_in: bool = True, **kwargs: object
) -> TestUser:
    user = await create_user(app, logged_in=logged_in, **kwargs)  # type: ignore[arg-type]
    await add_membership(app, org_id, user.id, role)
    return user


async def _role(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> OrgRole:
    role = await session.scalar(
        select(Membership.role).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    assert role is not None, "not a member"
    return OrgRole(role)


async def make_invitation(
    app: FastAPI, org_id: uuid.UUID, inviter_id: uuid.UUID, *, email: str, role: OrgRole | str = OrgRole.MEMBER
) -> tuple[uuid.UUID, str]:
    async with state_of(app).sessionmaker() as session:
        actor = Actor(org_id=org_id, user_id=inviter_id, role=await _role(session, org_id, inviter_id))
    async with state_of(app).data.transaction() as tx:
        invitation, token, _ = await org_service.create_invitation(
            tx, state_of(app).settings, actor=actor, email=email, role=OrgRole(role)
        )
    return invitation.id, token


async def make_api_key(
    app: FastAPI,
    org_id: uuid.UUID,
    creator_id: uuid.UUID,
    *,
    role: OrgRole | str = OrgRole.ADMIN,
    name: str = "tooling",
    expires_in_days: int | None = None,
) -> tuple[uuid.UUID, str]:
    """A key made through the service (as its creator, whose current role is checked): (id, key)."""
    async with state_of(app).sessionmaker() as session:
        actor = Actor(org_id=org_id, user_id=creator_id, role=await _role(session, org_id, creator_id))
    async with state_of(app).data.transaction() as tx:
        api_key, key = await api_keys.create_api_key(
            tx,
            state_of(app).settings,
            actor=actor,
            name=name,
            role=OrgRole(role),
            expires_in_days=expires_in_days,
        )
    return api_key.id, key


async def roles(app: FastAPI, org_id: uuid.UUID) -> dict[uuid.UUID, str]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.execute(select(Membership.user_id, Membership.role).where(Membership.org_id == org_id))
        return {user_id: role for user_id, role in rows}


async def owner_count(app: FastAPI, org_id: uuid.UUID) -> int:
    return sum(1 for role in (await roles(app, org_id)).values() if role == OrgRole.OWNER)


async def audit_actions(app: FastAPI, org_id: uuid.UUID) -> list[str]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent.action).where(AuditEvent.org_id == org_id).order_by(AuditEvent.created_at)
        )
        return list(rows)


async def invitation_count(app: FastAPI, org_id: uuid.UUID) -> int:
    async with state_of(app).sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Invitation).where(Invitation.org_id == org_id))
        return int(count or 0)


@dataclass
class World:
    """An organization with a founding owner, one member of each role to act on, and the actor."""

    org_id: uuid.UUID
    founder: TestUser
    targets: dict[str, TestUser]
    actor: TestUser
    outsider: TestUser  # an existing user who is not a member (to add)
    extra: dict[str, object] = field(default_factory=dict)


async def make_world(app: FastAPI, actor_kind: str) -> World:
    """``actor_kind``: non-member, member, admin, owner, superuser (a superuser who is not a member)."""
    founder = await create_user(app, logged_in=False)
    org_id = await make_org(app, founder)
    targets = {role: await member_of(app, org_id, role, logged_in=False) for role in ("member", "admin", "owner")}
    if actor_kind in {"member", "admin", "owner"}:
        actor = await member_of(app, org_id, actor_kind)
    else:
        actor = await create_user(app, is_superuser=actor_kind == "superuser")
    outsider = await create_user(app, logged_in=False)
    return World(org_id=org_id, founder=founder, targets=targets, actor=actor, outsider=outsider)
