"""Organizations that require MFA: aal1 callers get 403 mfa_required on everything but leaving, with own tokens and
with Supabase tokens; only an owner calling with aal2 switches it."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.orgs.models import Organization, OrgRole
from app.state import state_of
from tests import supabase_tokens
from tests.auth.mfa_helpers import enable_mfa, login_aal2
from tests.conftest import client_for
from tests.factories import create_user
from tests.orgs.helpers import add_membership, audit_actions, make_org, make_world, member_of, roles
from tests.orgs.test_router import HTTP_TABLE, call_for, org_url
from tests.supabase_tokens import JwksServer, SupabaseAppFactory, claims, mint

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def set_require_mfa(app: FastAPI, org_id: uuid.UUID, value: bool = True) -> None:
    async with state_of(app).sessionmaker() as session:
        await session.execute(update(Organization).where(Organization.id == org_id).values(require_mfa=value))
        await session.commit()


# Every operation under /organizations/{org_id}, as the access table has them (one per action).
ACTIONS = list(dict.fromkeys((action, target, role) for action, target, role, _ in HTTP_TABLE))


class TestSwitch:
    async def test_off_by_default_and_shown(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        response = await client.get(org_url(org_id), headers=owner.headers)
        assert response.json()["require_mfa"] is False
        listed = await client.get("/api/v1/organizations", headers=owner.headers)
        assert listed.json()["items"][0]["require_mfa"] is False

    async def test_owner_with_aal2_turns_it_on(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        await enable_mfa(client, app, owner)  # this session is aal2 now
        response = await client.patch(org_url(org_id), json={"require_mfa": True}, headers=owner.headers)
        assert response.status_code == 200, response.text
        assert response.json()["require_mfa"] is True
        assert (await client.get(org_url(org_id), headers=owner.headers)).json()["require_mfa"] is True
        assert (await audit_actions(app, org_id))[-1] == "org.require_mfa_changed"
        off = await client.patch(org_url(org_id), json={"require_mfa": False}, headers=owner.headers)
        assert off.json()["require_mfa"] is False

    async def test_owner_with_aal1_403(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        response = await client.patch(
            org_url(org_id), json={"require_mfa": True, "name": "Renamed"}, headers=owner.headers
        )
        assert response.status_code == 403
        assert response.json()["code"] == "mfa_required"
        org = (await client.get(org_url(org_id), headers=owner.headers)).json()
        assert (org["require_mfa"], org["name"]) == (False, "Acme")  # nothing half-done
        assert "org.require_mfa_changed" not in await audit_actions(app, org_id)

    async def test_admin_403(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app, logged_in=False)
        org_id = await make_org(app, owner)
        admin = await member_of(app, org_id, OrgRole.ADMIN)
        await enable_mfa(client, app, admin)
        response = await client.patch(org_url(org_id), json={"require_mfa": True}, headers=admin.headers)
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_role"
        # Admins still rename.
        assert (await client.patch(org_url(org_id), json={"name": "B"}, headers=admin.headers)).status_code == 200


class TestOwnTokens:
    @pytest.mark.parametrize("actor_kind", ["member", "admin", "owner"])
    @pytest.mark.parametrize(("action", "target", "role"), ACTIONS, ids=[f"{a}-{t}-{r}" for a, t, r in ACTIONS])
    async def test_aal1_member_403_everywhere(
        self,
        client: httpx.AsyncClient,
        app: FastAPI,
        actor_kind: str,
        action: str,
        target: str | None,
        role: str | None,
    ) -> None:
        world = await make_world(app, actor_kind)
        await set_require_mfa(app, world.org_id)
        call = await call_for(app, world, action, target, role)
        before = await roles(app, world.org_id)
        response = await client.request(call.method, call.path, json=call.body, headers=world.actor.headers)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "mfa_required"
        assert await roles(app, world.org_id) == before

    async def test_non_member_still_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "non-member")
        await set_require_mfa(app, world.org_id)
        response = await client.get(org_url(world.org_id), headers=world.actor.headers)
        assert (response.status_code, response.json()["code"]) == (404, "org_not_found")

    async def test_aal1_member_may_leave(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "member")
        await set_require_mfa(app, world.org_id)
        response = await client.delete(org_url(world.org_id, f"/members/{world.actor.id}"), headers=world.actor.headers)
        assert response.status_code == 204
        assert world.actor.id not in await roles(app, world.org_id)

    async def test_aal1_admin_may_not_remove_others(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "admin")
        await set_require_mfa(app, world.org_id)
        target = world.targets["member"].id
        response = await client.delete(org_url(world.org_id, f"/members/{target}"), headers=world.actor.headers)
        assert (response.status_code, response.json()["code"]) == (403, "mfa_required")

    async def test_aal2_member_passes(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        world = await make_world(app, "member")
        await set_require_mfa(app, world.org_id)
        secret, _ = await enable_mfa(client, app, world.actor)
        assert (await client.get(org_url(world.org_id), headers=world.actor.headers)).status_code == 200
        fresh = await login_aal2(client, app, world.actor, secret)
        assert (await client.get(org_url(world.org_id, "/members"), headers=bearer(fresh))).status_code == 200

    async def test_other_organizations_unaffected(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        strict = await make_org(app, user, name="Strict")
        relaxed = await make_org(app, user, name="Relaxed")
        await set_require_mfa(app, strict)
        assert (await client.get(org_url(strict), headers=user.headers)).status_code == 403
        assert (await client.get(org_url(relaxed), headers=user.headers)).status_code == 200
        # The list of one's organizations is not "under" one of them: it shows which ones need MFA.
        listed = await client.get("/api/v1/organizations", headers=user.headers)
        assert {o["name"]: o["require_mfa"] for o in listed.json()["items"]} == {"Strict": True, "Relaxed": False}


class TestSupabaseTokens:
    async def _member(
        self, application: FastAPI, jwks_server: JwksServer, aal: str, role: OrgRole = OrgRole.MEMBER
    ) -> tuple[uuid.UUID, uuid.UUID, str]:
        owner = await create_user(application, logged_in=False)
        org_id = await make_org(application, owner)
        await set_require_mfa(application, org_id)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub, aal=aal))
        async with client_for(application) as c:
            assert (await c.get("/api/v1/users/me", headers=bearer(token))).status_code == 200  # provisions
        await add_membership(application, org_id, sub, role)
        return org_id, sub, token

    @pytest.mark.parametrize(("aal", "status"), [("aal1", 403), ("aal2", 200)])
    async def test_claim_decides(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, aal: str, status: int
    ) -> None:
        application = await supabase_app()
        org_id, _, token = await self._member(application, jwks_server, aal)
        async with client_for(application) as c:
            for path in ("", "/members"):
                response = await c.get(org_url(org_id, path), headers=bearer(token))
                assert response.status_code == status, response.text
                if status == 403:
                    assert response.json()["code"] == "mfa_required"

    async def test_aal1_may_leave(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        org_id, sub, token = await self._member(application, jwks_server, "aal1")
        async with client_for(application) as c:
            response = await c.delete(org_url(org_id, f"/members/{sub}"), headers=bearer(token))
        assert response.status_code == 204
        assert sub not in await roles(application, org_id)

    async def test_aal2_owner_turns_it_on(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        org_id, _, token = await self._member(application, jwks_server, "aal2", role=OrgRole.OWNER)
        await set_require_mfa(application, org_id, False)
        async with client_for(application) as c:
            response = await c.patch(org_url(org_id), json={"require_mfa": True}, headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["require_mfa"] is True
