"""Organization API keys: creating, listing and revoking them; what a key may do (the access table with a key
instead of a person); how a key dies (revocation, expiry, its organization, its creator demoted, removed or
leaving), also for a second server process; the audit log naming the key; rate limits per key."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.audit.models import AuditEvent
from app.core import security
from app.orgs.models import ApiKey, Membership, OrgRole
from app.state import state_of
from app.users.models import User
from app.users.schemas import AccountExport
from tests import supabase_tokens
from tests.auth.mfa_helpers import enable_mfa
from tests.conftest import AppFactory, client_for
from tests.core.uvicorn_server import uvicorn_server
from tests.factories import TestUser as Person
from tests.factories import create_user
from tests.orgs.helpers import (
    API,
    add_membership,
    make_api_key,
    make_org,
    make_world,
    member_of,
    roles,
)
from tests.orgs.test_require_mfa import set_require_mfa
from tests.orgs.test_router import HTTP_TABLE, call_for, org_url
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, claims, mint

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_key(client: httpx.AsyncClient, org_id: uuid.UUID, user: Person, **body: Any) -> httpx.Response:
    return await client.post(
        org_url(org_id, "/api-keys"), json={"name": "ci", "role": "admin", **body}, headers=user.headers
    )


async def key_row(app: FastAPI, key_id: uuid.UUID) -> ApiKey:
    async with state_of(app).sessionmaker() as session:
        row: ApiKey | None = await session.get(ApiKey, key_id)
        assert row is not None
        return row


async def set_key(app: FastAPI, key_id: uuid.UUID, **values: Any) -> None:
    async with state_of(app).sessionmaker() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
        await session.commit()


async def events(app: FastAPI, org_id: uuid.UUID) -> list[AuditEvent]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.created_at, AuditEvent.id)
        )
        return list(rows)


async def org_with_admin(app: FastAPI) -> tuple[uuid.UUID, Person, Person]:
    """An organization, its (logged-out) owner, and a logged-in admin."""
    owner = await create_user(app, logged_in=False)
    org_id = await make_org(app, owner)
    admin = await member_of(app, org_id, OrgRole.ADMIN)
    return org_id, owner, admin


# --- managing keys --------------------------------------------------------------------------------------


class TestCreateApiKey:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        response = await create_key(client, org_id, admin, name="  HR sync  ", role="member", expires_in_days=30)
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {
            "id", "name", "role", "prefix", "key", "created_by", "created_at", "expires_at", "last_used_at"
        }  # fmt: skip
        assert (body["name"], body["role"], body["last_used_at"]) == ("HR sync", "member", None)
        assert body["created_by"] == str(admin.id)
        assert body["key"].startswith(f"oak_{body['prefix']}_")
        expires = datetime.fromisoformat(body["expires_at"])
        assert abs(expires - datetime.now(UTC) - timedelta(days=30)) < timedelta(minutes=1)
        row = await key_row(app, uuid.UUID(body["id"]))
        assert row.secret_hash != body["key"] and body["key"] not in row.secret_hash  # only an HMAC is stored
        (event,) = [e for e in await events(app, org_id) if e.action == "api_key.created"]
        assert (event.actor_id, event.actor_api_key_id) == (admin.id, None)
        assert event.details["api_key_id"] == body["id"] and body["key"] not in str(event.details)

    async def test_no_expiry(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        response = await create_key(client, org_id, admin)
        assert response.status_code == 201
        assert response.json()["expires_at"] is None

    @pytest.mark.parametrize(
        ("creator", "role", "expected"),
        [
            ("admin", "admin", 201),
            ("admin", "member", 201),
            ("owner", "admin", 201),
            ("owner", "member", 201),
            ("member", "member", 403),
            ("admin", "owner", 422),  # a key is never an owner
            ("owner", "owner", 422),
        ],
    )
    async def test_role_ceiling(
        self, client: httpx.AsyncClient, app: FastAPI, creator: str, role: str, expected: int
    ) -> None:
        world = await make_world(app, creator)
        response = await create_key(client, world.org_id, world.actor, role=role)
        assert response.status_code == expected, response.text
        if expected == 403:
            assert response.json()["code"] == "insufficient_role"

    @pytest.mark.parametrize(
        "body", [{"expires_in_days": 0}, {"expires_in_days": 366}, {"name": ""}, {"name": "x" * 101}, {"key": "x"}]
    )
    async def test_invalid_body_422(self, client: httpx.AsyncClient, app: FastAPI, body: dict[str, Any]) -> None:
        org_id, _, admin = await org_with_admin(app)
        assert (await create_key(client, org_id, admin, **body)).status_code == 422

    async def test_non_member_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "non-member")
        response = await create_key(client, world.org_id, world.actor)
        assert (response.status_code, response.json()["code"]) == (404, "org_not_found")

    async def test_a_key_cannot_create_keys(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        response = await client.post(
            org_url(org_id, "/api-keys"), json={"name": "x", "role": "member"}, headers=bearer(key)
        )
        assert (response.status_code, response.json()["code"]) == (403, "api_key_not_allowed")

    async def test_by_a_supabase_user(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        owner = await create_user(application, logged_in=False)
        org_id = await make_org(application, owner)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub))
        async with client_for(application) as c:
            assert (await c.get(f"{API}/users/me", headers=bearer(token))).status_code == 200  # provisions
            await add_membership(application, org_id, sub, OrgRole.ADMIN)
            created = await c.post(
                org_url(org_id, "/api-keys"), json={"name": "ci", "role": "admin"}, headers=bearer(token)
            )
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            assert (await c.get(org_url(org_id, "/members"), headers=bearer(key))).status_code == 200

    async def test_needs_aal2_where_the_organization_requires_mfa(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        org_id, _, admin = await org_with_admin(app)
        await set_require_mfa(app, org_id)
        response = await create_key(client, org_id, admin)
        assert (response.status_code, response.json()["code"]) == (403, "mfa_required")
        await enable_mfa(client, app, admin)  # this session is aal2 now
        assert (await create_key(client, org_id, admin)).status_code == 201


class TestListApiKeys:
    async def test_ok_without_keys(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, owner, admin = await org_with_admin(app)
        ids = [(await create_key(client, org_id, admin, name=f"k{i}")).json()["id"] for i in range(3)]
        await make_api_key(app, await make_org(app, owner, name="Other"), owner.id)  # another organization's
        response = await client.get(org_url(org_id, "/api-keys?limit=2"), headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
        assert [k["id"] for k in body["items"]] == ids[::-1][:2]  # newest first
        assert all("key" not in k for k in body["items"])

    async def test_revoked_keys_are_not_listed(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, _ = await make_api_key(app, org_id, admin.id)
        await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)
        assert (await client.get(org_url(org_id, "/api-keys"), headers=admin.headers)).json()["total"] == 0

    async def test_member_403_and_key_403(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        member = await member_of(app, org_id, OrgRole.MEMBER)
        _, key = await make_api_key(app, org_id, admin.id)
        assert (await client.get(org_url(org_id, "/api-keys"), headers=member.headers)).json()["code"] == (
            "insufficient_role"
        )
        assert (await client.get(org_url(org_id, "/api-keys"), headers=bearer(key))).json()["code"] == (
            "api_key_not_allowed"
        )


class TestRevokeApiKey:
    async def test_ok_refused_at_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, owner, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, owner.id)  # an admin revokes any key, also the owner's
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 200
        response = await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)
        assert response.status_code == 204
        refused = await client.get(org_url(org_id), headers=bearer(key))
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_api_key")
        assert refused.headers["www-authenticate"] == "Bearer"
        (event,) = [e for e in await events(app, org_id) if e.action == "api_key.revoked"]
        assert (event.actor_id, event.details["api_key_id"]) == (admin.id, str(key_id))

    async def test_twice_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, _ = await make_api_key(app, org_id, admin.id)
        assert (await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)).status_code == 204
        again = await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)
        assert (again.status_code, again.json()["code"]) == (404, "api_key_not_found")

    async def test_unknown_or_other_organizations_key_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        other_org = await make_org(app, admin, name="Other")
        other_key, key = await make_api_key(app, other_org, admin.id)
        for key_id in (uuid.uuid4(), other_key):
            response = await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)
            assert (response.status_code, response.json()["code"]) == (404, "api_key_not_found")
        assert (await client.get(org_url(other_org), headers=bearer(key))).status_code == 200

    async def test_member_403(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        member = await member_of(app, org_id, OrgRole.MEMBER)
        key_id, key = await make_api_key(app, org_id, admin.id)
        response = await client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=member.headers)
        assert (response.status_code, response.json()["code"]) == (403, "insufficient_role")
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 200


# --- what a key may do ----------------------------------------------------------------------------------

NOT_FOR_KEYS = {"update_org", "delete_org", "transfer", "create_api_key", "list_api_keys", "revoke_api_key"}
# The people's table (tests/orgs/test_router.py) with a key of role admin / member made by an admin: the key acts
# as an admin / member would, except the actions keys may not do at all.
KEY_CASES = [
    pytest.param(
        key_role, action, target, role, 403 if action in NOT_FOR_KEYS else expected[index],
        id=f"{key_role}-key-{action}-{target}-{role}",
    )
    for action, target, role, expected in HTTP_TABLE
    for key_role, index in (("admin", 2), ("member", 1))
]  # fmt: skip


class TestKeyAccessTable:
    @pytest.mark.parametrize(("key_role", "action", "target", "role", "expected"), KEY_CASES)
    async def test_table(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        key_role: str,
        action: str,
        target: str | None,
        role: str | None,
        expected: int,
    ) -> None:
        world = await make_world(app, "admin")
        _, key = await make_api_key(app, world.org_id, world.actor.id, role=key_role)
        call = await call_for(app, world, action, target, role)
        before = await roles(app, world.org_id)
        response = await client.request(call.method, call.path, json=call.body, headers=bearer(key))
        assert response.status_code == expected, response.text
        if expected == 403:
            code = "api_key_not_allowed" if action in NOT_FOR_KEYS else "insufficient_role"
            assert response.json()["code"] == code
        if expected >= 400:
            assert await roles(app, world.org_id) == before

    async def test_role_shown_is_the_keys(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "owner")
        _, key = await make_api_key(app, world.org_id, world.actor.id, role="member")
        assert (await client.get(org_url(world.org_id), headers=bearer(key))).json()["role"] == "member"

    async def test_another_organization_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        other = await make_org(app, admin, name="Also mine")  # the key's creator owns it: still 404 for the key
        _, key = await make_api_key(app, org_id, admin.id)
        for method, path in [
            ("GET", org_url(other)),
            ("GET", org_url(other, "/members")),
            ("DELETE", org_url(other)),
            ("POST", org_url(other, "/api-keys")),
            ("GET", org_url(uuid.uuid4())),
        ]:
            response = await client.request(method, path, headers=bearer(key))
            assert (response.status_code, response.json()["code"]) == (404, "org_not_found"), (method, path)

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/users/me"),
            ("PATCH", "/users/me"),
            ("GET", "/profile"),
            ("POST", "/profile"),
            ("GET", "/credits"),
            ("GET", "/credits/transactions"),
            ("POST", "/credits/spend"),
            ("GET", "/admin/users"),
            ("GET", "/admin/audit-events"),
            ("GET", "/organizations"),
            ("POST", "/organizations"),
            ("POST", "/invitations/accept"),
            ("GET", "/auth/sessions"),
            ("POST", "/auth/logout"),
            ("POST", "/auth/logout-all"),
            ("POST", "/auth/mfa/totp/enroll"),
        ],
    )
    async def test_not_allowed_elsewhere(self, client: httpx.AsyncClient, app: FastAPI, method: str, path: str) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        body: dict[str, Any] | None = {} if method in {"POST", "PATCH"} else None
        response = await client.request(method, f"{API}{path}", json=body, headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (403, "api_key_not_allowed"), response.text

    async def test_a_superusers_key_is_still_only_a_key(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        root = await create_user(app, is_superuser=True)
        org_id = await make_org(app, root)
        _, key = await make_api_key(app, org_id, root.id)
        response = await client.get(f"{API}/admin/users", headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (403, "api_key_not_allowed")

    @pytest.mark.parametrize("key_role", ["admin", "member"])
    async def test_a_key_cannot_leave(self, client: httpx.AsyncClient, app: FastAPI, key_role: str) -> None:
        """``DELETE …/members/{its creator}`` with a key is leaving (the key acts as its creator): not for keys."""
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id, role=key_role)
        response = await client.delete(org_url(org_id, f"/members/{admin.id}"), headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (403, "api_key_not_allowed")
        assert (await roles(app, org_id))[admin.id] == "admin"

    async def test_use_is_exempt_from_the_mfa_requirement(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        await set_require_mfa(app, org_id)
        assert (await client.get(org_url(org_id, "/members"), headers=bearer(key))).status_code == 200
        assert (await client.get(org_url(org_id, "/members"), headers=admin.headers)).status_code == 403

    async def test_malformed_and_unknown_keys_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        _, never_stored = security.new_api_key(state_of(app).settings)
        for token in ("oak_", "oak_nothing", key[:-1] + ("A" if key[-1] != "A" else "B"), never_stored):
            response = await client.get(org_url(org_id), headers=bearer(token))
            assert (response.status_code, response.json()["code"]) == (401, "invalid_api_key"), token

    async def test_a_prefix_with_another_secret_401(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """Knowing a key's prefix is nothing: the stored HMAC of the whole key must match."""
        org_id, _, admin = await org_with_admin(app)
        key_id, _ = await make_api_key(app, org_id, admin.id)
        prefix, forged = security.new_api_key(state_of(app).settings)
        await set_key(app, key_id, prefix=prefix)  # a well-formed key whose prefix exists, with another secret
        response = await client.get(org_url(org_id), headers=bearer(forged))
        assert (response.status_code, response.json()["code"]) == (401, "invalid_api_key")


# --- how a key dies -------------------------------------------------------------------------------------


class TestKeyDies:
    async def test_expiry(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id, expires_in_days=1)
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 200
        await set_key(app, key_id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        response = await client.get(org_url(org_id), headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (401, "invalid_api_key")

    async def test_creator_demoted_for_good(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        admin = await member_of(app, org_id, OrgRole.ADMIN, logged_in=False)
        key_id, key = await make_api_key(app, org_id, admin.id)
        member_path = org_url(org_id, f"/members/{admin.id}")
        assert (await client.patch(member_path, json={"role": "member"}, headers=owner.headers)).status_code == 200
        response = await client.get(org_url(org_id), headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (401, "invalid_api_key")
        assert (await key_row(app, key_id)).revoked_at is not None
        revoked = [e for e in await events(app, org_id) if e.action == "api_key.revoked"]
        assert [(e.actor_id, e.details["reason"]) for e in revoked] == [(owner.id, "creator_demoted")]
        # Promoted again: the key stays dead.
        assert (await client.patch(member_path, json={"role": "admin"}, headers=owner.headers)).status_code == 200
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401

    async def test_creator_demoted_behind_the_apis_back(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """The lookup joins the creator's current role: even a change made outside the service kills the key."""
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        async with state_of(app).sessionmaker() as session:
            await session.execute(
                update(Membership)
                .where(Membership.org_id == org_id, Membership.user_id == admin.id)
                .values(role=OrgRole.MEMBER)
            )
            await session.commit()
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401

    async def test_owner_creator_stepping_down_to_admin_keeps_it(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        heir = await member_of(app, org_id, OrgRole.MEMBER)
        _, key = await make_api_key(app, org_id, owner.id)
        response = await client.post(
            org_url(org_id, "/transfer-ownership"), json={"user_id": str(heir.id)}, headers=owner.headers
        )
        assert response.status_code == 200
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 200

    async def test_creator_leaves(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id)
        assert (await client.delete(org_url(org_id, f"/members/{admin.id}"), headers=admin.headers)).status_code == 204
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401
        assert (await key_row(app, key_id)).revoked_at is not None
        await add_membership(app, org_id, admin.id, OrgRole.ADMIN)  # back again: the key stays dead
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401

    async def test_creator_removed(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        admin = await member_of(app, org_id, OrgRole.ADMIN, logged_in=False)
        _, key = await make_api_key(app, org_id, admin.id)
        assert (await client.delete(org_url(org_id, f"/members/{admin.id}"), headers=owner.headers)).status_code == 204
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401
        assert "creator_removed" in [e.details.get("reason") for e in await events(app, org_id)]

    async def test_organization_deleted(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        key_id, key = await make_api_key(app, org_id, owner.id)
        assert (await client.delete(org_url(org_id), headers=owner.headers)).status_code == 204
        response = await client.get(org_url(org_id), headers=bearer(key))
        assert (response.status_code, response.json()["code"]) == (401, "invalid_api_key")
        async with state_of(app).sessionmaker() as session:
            assert await session.get(ApiKey, key_id) is None  # gone with its organization

    async def test_creator_deactivated(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        async with state_of(app).sessionmaker() as session:
            await session.execute(update(User).where(User.id == admin.id).values(is_active=False))
            await session.commit()
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401

    async def test_creator_deletes_their_account(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id)
        deleted = await client.request(
            "DELETE", f"{API}/users/me", json={"current_password": admin.password}, headers=admin.headers
        )
        assert deleted.status_code == 204, deleted.text
        assert (await client.get(org_url(org_id), headers=bearer(key))).status_code == 401
        async with state_of(app).sessionmaker() as session:
            assert await session.get(ApiKey, key_id) is None  # gone with its creator

    async def test_refused_by_another_app_instance(self, app: FastAPI, make_app: AppFactory) -> None:
        """Two app instances (own pools, own caches) on one database: a revocation on one is seen by the other."""
        other = await make_app()
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id)
        async with client_for(app) as a, client_for(other) as b:
            for _ in range(3):
                assert (await b.get(org_url(org_id, "/members"), headers=bearer(key))).status_code == 200
            assert (await a.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)).status_code == 204
            assert (await b.get(org_url(org_id, "/members"), headers=bearer(key))).status_code == 401

    async def test_refused_by_a_second_server_process(self, app: FastAPI, database_url: str) -> None:
        """A uvicorn process of its own on the same database: the key it accepted is refused on its next request
        after a revocation made through this process."""
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id)
        with uvicorn_server(database_url) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as remote, client_for(app) as local:
                for _ in range(3):
                    assert (await remote.get(org_url(org_id, "/members"), headers=bearer(key))).status_code == 200
                revoked = await local.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=admin.headers)
                assert revoked.status_code == 204
                refused = await remote.get(org_url(org_id, "/members"), headers=bearer(key))
                assert (refused.status_code, refused.json()["code"]) == (401, "invalid_api_key")


# --- bookkeeping ----------------------------------------------------------------------------------------


class TestAuditNamesTheKey:
    async def test_every_key_action_names_it(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "admin")
        key_id, key = await make_api_key(app, world.org_id, world.actor.id)
        headers = bearer(key)
        org = world.org_id
        added = await client.post(
            org_url(org, "/members"), json={"email": world.outsider.email, "role": "member"}, headers=headers
        )
        assert added.status_code == 201
        target = world.targets["member"].id
        assert (
            await client.patch(org_url(org, f"/members/{target}"), json={"role": "admin"}, headers=headers)
        ).is_success
        assert (await client.delete(org_url(org, f"/members/{target}"), headers=headers)).status_code == 204
        invited = await client.post(
            org_url(org, "/invitations"), json={"email": "new@example.com", "role": "member"}, headers=headers
        )
        assert invited.status_code == 201
        assert (await client.delete(org_url(org, f"/invitations/{invited.json()['id']}"), headers=headers)).is_success
        by_key = [e for e in await events(app, org) if e.actor_api_key_id is not None]
        assert [e.action for e in by_key] == [
            "member.added",
            "member.role_changed",
            "member.removed",
            "invitation.created",
            "invitation.revoked",
        ]
        assert {(e.actor_id, e.actor_api_key_id) for e in by_key} == {(world.actor.id, key_id)}
        # Readable where audit events are read: by the key itself, and by a person.
        for reader in (headers, world.actor.headers):
            listed = await client.get(org_url(org, "/audit-events?limit=100"), headers=reader)
            assert listed.status_code == 200
            named = {e["action"] for e in listed.json()["items"] if e["actor_api_key_id"] == str(key_id)}
            assert named == {e.action for e in by_key}


class TestAccountExport:
    async def test_keys_created_and_what_they_did(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "admin")
        key_id, key = await make_api_key(app, world.org_id, world.actor.id, name="HR sync")
        added = await client.post(
            org_url(world.org_id, "/members"),
            json={"email": world.outsider.email, "role": "member"},
            headers=bearer(key),
        )
        assert added.status_code == 201
        response = await client.get(f"{API}/users/me/export", headers=world.actor.headers)
        assert response.status_code == 200, response.text
        assert key not in response.text
        document = AccountExport.model_validate(response.json())
        assert [(k.id, k.name, k.prefix) for k in document.api_keys_created] == [(key_id, "HR sync", key[4:16])]
        by_key = [e for e in document.audit_events if e.actor_api_key_id == key_id]
        assert [e.action for e in by_key] == ["member.added"]


class TestLastUsed:
    async def test_kept_to_the_minute(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        key_id, key = await make_api_key(app, org_id, admin.id)
        assert (await key_row(app, key_id)).last_used_at is None
        await client.get(org_url(org_id), headers=bearer(key))
        first = (await key_row(app, key_id)).last_used_at
        assert first is not None and datetime.now(UTC) - first < timedelta(minutes=1)
        await client.get(org_url(org_id), headers=bearer(key))
        assert (await key_row(app, key_id)).last_used_at == first  # within the minute: no write
        earlier = datetime.now(UTC) - timedelta(minutes=2)
        await set_key(app, key_id, last_used_at=earlier)
        await client.get(org_url(org_id), headers=bearer(key))
        later = (await key_row(app, key_id)).last_used_at
        assert later is not None and later > earlier + timedelta(minutes=1)
        listed = await client.get(org_url(org_id, "/api-keys"), headers=admin.headers)
        assert listed.json()["items"][0]["last_used_at"] is not None

    async def test_concurrent_first_uses_all_answer(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        org_id, _, admin = await org_with_admin(app)
        _, key = await make_api_key(app, org_id, admin.id)
        answers = await asyncio.gather(*(client.get(org_url(org_id), headers=bearer(key)) for _ in range(5)))
        assert all(a.status_code == 200 for a in answers)


class TestRateLimitPerKey:
    async def test_each_key_has_its_own_counter(self, make_app: AppFactory) -> None:
        limited = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT="3/minute")
        org_id, _, admin = await org_with_admin(limited)
        _, first = await make_api_key(limited, org_id, admin.id, name="first")
        _, second = await make_api_key(limited, org_id, admin.id, name="second")
        path = org_url(org_id, "/members")
        async with client_for(limited) as c:
            statuses = [(await c.get(path, headers=bearer(first))).status_code for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            blocked = await c.get(path, headers=bearer(first))
            assert blocked.json()["code"] == "rate_limited" and int(blocked.headers["retry-after"]) >= 1
            # Another key of the same creator, and the creator themself, from the same address: their own counters.
            assert (await c.get(path, headers=bearer(second))).status_code == 200
            assert (await c.get(path, headers=admin.headers)).status_code == 200

    async def test_forged_keys_count_per_address(self, make_app: AppFactory) -> None:
        limited = await make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT="2/minute")
        org_id = uuid.uuid4()
        async with client_for(limited) as c:
            forged = [f"oak_{uuid.uuid4().hex[:12]}_{'A' * 51}" for _ in range(3)]
            statuses = [(await c.get(org_url(org_id), headers=bearer(k))).status_code for k in forged]
            assert statuses == [401, 401, 429]  # a new made-up key is no new counter
