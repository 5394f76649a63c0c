"""/api/v1/admin/...: superusers only."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.auth.models import AuthSession
from app.orgs.models import Organization
from app.state import state_of
from tests.conftest import requires_postgres
from tests.factories import DEFAULT_PASSWORD, create_user, load_user, unique_email
from tests.factories import TestUser as AUser

pytestmark = pytest.mark.asyncio

ADMIN = "/api/v1/admin"

# Every admin route: (method, path with {user_id}/{org_id}, JSON body or None).
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/users", None),
    ("GET", "/users/{user_id}", None),
    ("PATCH", "/users/{user_id}", {"full_name": "x"}),
    ("DELETE", "/users/{user_id}", None),
    ("GET", "/users/{user_id}/sessions", None),
    ("DELETE", "/users/{user_id}/sessions", None),
    ("POST", "/users/{user_id}/credits", {"amount": 5, "reason": "gift"}),
    ("GET", "/organizations", None),
    ("DELETE", "/organizations/{org_id}", None),
    ("GET", "/audit-events", None),
]


async def superuser(app: FastAPI, **kwargs: Any) -> AUser:
    return await create_user(app, is_superuser=True, **kwargs)


async def create_org(client: httpx.AsyncClient, owner: AUser, name: str = "Acme") -> str:
    response = await client.post("/api/v1/organizations", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    org_id: str = response.json()["id"]
    return org_id


async def add_member(client: httpx.AsyncClient, org_id: str, owner: AUser, member: AUser, role: str) -> None:
    response = await client.post(
        f"/api/v1/organizations/{org_id}/members", json={"email": member.email, "role": role}, headers=owner.headers
    )
    assert response.status_code == 201, response.text


async def events(app: FastAPI, action: str) -> list[AuditEvent]:
    async with state_of(app).sessionmaker() as session:
        return list(await session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


async def org_exists(app: FastAPI, org_id: str) -> bool:
    async with state_of(app).sessionmaker() as session:
        return await session.get(Organization, uuid.UUID(org_id)) is not None


class TestAccess:
    async def test_every_admin_route_is_listed(self, app: FastAPI) -> None:
        paths = app.openapi()["paths"]
        served = {
            (method.upper(), path.removeprefix(ADMIN))
            for path, operations in paths.items()
            if path.startswith(ADMIN)
            for method in operations
        }
        assert served == {(method, path) for method, path, _ in ADMIN_ROUTES}

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
    async def test_no_token_401(
        self, client: httpx.AsyncClient, app: FastAPI, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        target = await create_user(app, logged_in=False)
        url = ADMIN + path.format(user_id=target.id, org_id=uuid.uuid4())
        response = await client.request(method, url, json=body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
    async def test_normal_user_403(
        self, client: httpx.AsyncClient, app: FastAPI, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        user = await create_user(app)
        target = await create_user(app)
        org_id = await create_org(client, target)
        url = ADMIN + path.format(user_id=target.id, org_id=org_id)
        response = await client.request(method, url, json=body, headers=user.headers)
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
        # nothing happened to the target
        assert (await client.get("/api/v1/users/me", headers=target.headers)).status_code == 200
        assert await org_exists(app, org_id)
        assert (await client.get("/api/v1/credits", headers=target.headers)).json()["balance"] == 1000


class TestListUsers:
    async def test_paged(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        for _ in range(3):
            await create_user(app, logged_in=False)
        response = await client.get(f"{ADMIN}/users", params={"limit": 2, "offset": 1}, headers=admin.headers)
        assert response.status_code == 200
        body = response.json()
        assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (4, 2, 1, 2)
        assert {"id", "email", "full_name", "is_active", "is_superuser", "is_verified", "created_at"} <= set(
            body["items"][0]
        )
        assert "hashed_password" not in body["items"][0]

    async def test_search_email_case_insensitive(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app, email=unique_email("zebra"), logged_in=False)
        await create_user(app, logged_in=False)
        response = await client.get(f"{ADMIN}/users", params={"search": "ZEBRA"}, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [str(target.id)]

    async def test_search_name(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app, full_name="Ada Lovelace", logged_in=False)
        response = await client.get(f"{ADMIN}/users", params={"search": "lovelace"}, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [str(target.id)]

    @pytest.mark.parametrize(("names", "search"), [(("100% sure", "1000 sure"), "0%"), (("a_b", "axb"), "a_")])
    async def test_search_wildcards_are_literal(
        self, client: httpx.AsyncClient, app: FastAPI, names: tuple[str, str], search: str
    ) -> None:
        admin = await superuser(app)
        literal = await create_user(app, full_name=names[0], logged_in=False)
        await create_user(app, full_name=names[1], logged_in=False)
        response = await client.get(f"{ADMIN}/users", params={"search": search}, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [str(literal.id)]

    async def test_filters(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        inactive = await create_user(app, is_active=False, logged_in=False)
        await create_user(app, logged_in=False)
        response = await client.get(f"{ADMIN}/users", params={"is_active": "false"}, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [str(inactive.id)]
        response = await client.get(f"{ADMIN}/users", params={"is_superuser": "true"}, headers=admin.headers)
        assert [item["id"] for item in response.json()["items"]] == [str(admin.id)]

    @pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}])
    async def test_bad_paging_422(self, client: httpx.AsyncClient, app: FastAPI, params: dict[str, int]) -> None:
        admin = await superuser(app)
        response = await client.get(f"{ADMIN}/users", params=params, headers=admin.headers)
        assert response.status_code == 422


class TestGetUser:
    async def test_ok_with_organizations_and_balance(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        org_id = await create_org(client, target, "Target Org")
        response = await client.get(f"{ADMIN}/users/{target.id}", headers=admin.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["email"] == target.email
        assert body["balance"] == body["credits"] == 1000
        [org] = body["organizations"]
        assert org["org_id"] == org_id and org["name"] == "Target Org" and org["role"] == "owner" and org["slug"]

    async def test_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.get(f"{ADMIN}/users/{uuid.uuid4()}", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"

    async def test_bad_id_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.get(f"{ADMIN}/users/not-a-uuid", headers=admin.headers)
        assert response.status_code == 422


class TestUpdateUser:
    async def test_rename(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.patch(f"{ADMIN}/users/{target.id}", json={"full_name": "New"}, headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["full_name"] == "New"
        [event] = await events(app, "admin.user_updated")
        assert (event.actor_id, event.subject_user_id) == (admin.id, target.id)
        assert event.details["changes"] == {"full_name": "New"}

    async def test_extra_field_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.patch(f"{ADMIN}/users/{target.id}", json={"email": "x@y.io"}, headers=admin.headers)
        assert response.status_code == 422

    async def test_deactivate_ends_sessions_at_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        assert (await client.get("/api/v1/users/me", headers=target.headers)).status_code == 200
        response = await client.patch(f"{ADMIN}/users/{target.id}", json={"is_active": False}, headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["is_active"] is False
        assert (await client.get("/api/v1/users/me", headers=target.headers)).status_code == 401
        refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": target.refresh_token})
        assert refresh.status_code == 401
        login = await client.post("/api/v1/auth/login", json={"email": target.email, "password": DEFAULT_PASSWORD})
        assert login.status_code == 401
        async with state_of(app).sessionmaker() as session:
            auth_session = await session.get(AuthSession, target.session_id)
        assert auth_session is not None and auth_session.revoked_reason == "user_deactivated"

    async def test_reactivate(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app, is_active=False, logged_in=False)
        response = await client.patch(f"{ADMIN}/users/{target.id}", json={"is_active": True}, headers=admin.headers)
        assert response.json()["is_active"] is True
        login = await client.post("/api/v1/auth/login", json={"email": target.email, "password": DEFAULT_PASSWORD})
        assert login.status_code == 200

    async def test_promote(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.patch(f"{ADMIN}/users/{target.id}", json={"is_superuser": True}, headers=admin.headers)
        assert response.json()["is_superuser"] is True
        assert (await client.get(f"{ADMIN}/users", headers=target.headers)).status_code == 200

    @pytest.mark.parametrize("change", [{"is_superuser": False}, {"is_active": False}])
    async def test_last_superuser_cannot_demote_or_deactivate_self_409(
        self, client: httpx.AsyncClient, app: FastAPI, change: dict[str, bool]
    ) -> None:
        admin = await superuser(app)
        await create_user(app, is_superuser=True, is_active=False, logged_in=False)  # inactive: does not count
        response = await client.patch(f"{ADMIN}/users/{admin.id}", json=change, headers=admin.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "last_superuser"
        user = await load_user(app, admin.id)
        assert user is not None and user.is_superuser and user.is_active

    async def test_demote_self_when_another_remains(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        await superuser(app, logged_in=False)
        response = await client.patch(f"{ADMIN}/users/{admin.id}", json={"is_superuser": False}, headers=admin.headers)
        assert response.status_code == 200
        assert (await client.get(f"{ADMIN}/users", headers=admin.headers)).status_code == 403

    async def test_demote_other(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        other = await superuser(app)
        response = await client.patch(f"{ADMIN}/users/{other.id}", json={"is_superuser": False}, headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["is_superuser"] is False

    async def test_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.patch(f"{ADMIN}/users/{uuid.uuid4()}", json={"full_name": "x"}, headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"

    @requires_postgres()
    async def test_two_superusers_demoting_themselves_at_once_keep_one(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        first, second = await superuser(app), await superuser(app)
        responses = await asyncio.gather(
            *(
                client.patch(f"{ADMIN}/users/{user.id}", json={"is_superuser": False}, headers=user.headers)
                for user in (first, second)
            )
        )
        assert sorted(response.status_code for response in responses) == [200, 409]
        users = [await load_user(app, user.id) for user in (first, second)]
        assert sum(1 for user in users if user is not None and user.is_superuser) == 1

    @requires_postgres()
    async def test_two_superusers_deactivating_each_other_at_once_keep_one(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        first, second = await superuser(app), await superuser(app)
        await asyncio.gather(
            client.patch(f"{ADMIN}/users/{second.id}", json={"is_active": False}, headers=first.headers),
            client.patch(f"{ADMIN}/users/{first.id}", json={"is_active": False}, headers=second.headers),
        )
        users = [await load_user(app, user.id) for user in (first, second)]
        assert sum(1 for user in users if user is not None and user.is_active) == 1


class TestDeleteUser:
    async def test_ok_ends_sessions(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.delete(f"{ADMIN}/users/{target.id}", headers=admin.headers)
        assert response.status_code == 204
        assert await load_user(app, target.id) is None
        assert (await client.get("/api/v1/users/me", headers=target.headers)).status_code == 401
        [event] = await events(app, "admin.user_deleted")
        assert (event.actor_id, event.subject_user_id) == (admin.id, target.id)

    async def test_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.delete(f"{ADMIN}/users/{uuid.uuid4()}", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"

    async def test_sole_owner_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        org_id = await create_org(client, target)
        await add_member(client, org_id, target, await create_user(app), "member")
        response = await client.delete(f"{ADMIN}/users/{target.id}", headers=admin.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "sole_owner"
        assert await load_user(app, target.id) is not None
        assert await org_exists(app, org_id)

    async def test_org_they_alone_belong_to_needs_force(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """An admin never deletes an organization silently, even one nobody else belongs to (API.md: 409
        ``sole_owner`` unless ``?force=true``); the user deleting themself takes theirs along instead."""
        admin = await superuser(app)
        target = await create_user(app)
        org_id = await create_org(client, target)
        response = await client.delete(f"{ADMIN}/users/{target.id}", headers=admin.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "sole_owner"
        assert await load_user(app, target.id) is not None
        assert await org_exists(app, org_id)
        forced = await client.delete(f"{ADMIN}/users/{target.id}", params={"force": "true"}, headers=admin.headers)
        assert forced.status_code == 204
        assert not await org_exists(app, org_id)
        [event] = await events(app, "admin.user_deleted")
        assert event.details["deleted_org_ids"] == [org_id]
        assert target.email not in str(event.details)

    async def test_force_deletes_solely_owned_orgs(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        co_owner = await create_user(app)
        sole = await create_org(client, target, "Sole")
        await add_member(client, sole, target, await create_user(app), "admin")
        shared = await create_org(client, target, "Shared")
        await add_member(client, shared, target, co_owner, "owner")
        response = await client.delete(f"{ADMIN}/users/{target.id}", params={"force": "true"}, headers=admin.headers)
        assert response.status_code == 204
        assert await load_user(app, target.id) is None
        assert not await org_exists(app, sole)
        assert await org_exists(app, shared)

    async def test_co_owned_org_is_no_obstacle(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        co_owner = await create_user(app)
        org_id = await create_org(client, target)
        await add_member(client, org_id, target, co_owner, "owner")
        response = await client.delete(f"{ADMIN}/users/{target.id}", headers=admin.headers)
        assert response.status_code == 204
        assert await org_exists(app, org_id)

    async def test_last_superuser_deleting_self_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.delete(f"{ADMIN}/users/{admin.id}", headers=admin.headers)
        assert response.status_code == 409
        assert response.json()["code"] == "last_superuser"
        assert await load_user(app, admin.id) is not None

    async def test_deleting_self_with_another_superuser(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        await superuser(app, logged_in=False)
        response = await client.delete(f"{ADMIN}/users/{admin.id}", headers=admin.headers)
        assert response.status_code == 204


class TestUserSessions:
    async def test_list(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.get(f"{ADMIN}/users/{target.id}/sessions", headers=admin.headers)
        assert response.status_code == 200
        [item] = response.json()
        assert item["id"] == str(target.session_id) and item["ip_address"] == "127.0.0.1"

    async def test_list_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.get(f"{ADMIN}/users/{uuid.uuid4()}/sessions", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"

    async def test_end_all(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.delete(f"{ADMIN}/users/{target.id}/sessions", headers=admin.headers)
        assert response.status_code == 204
        assert (await client.get("/api/v1/users/me", headers=target.headers)).status_code == 401
        listed = await client.get(f"{ADMIN}/users/{target.id}/sessions", headers=admin.headers)
        assert listed.json() == []
        [event] = await events(app, "admin.sessions_revoked")
        assert event.details == {"sessions_ended": 1}
        assert (await client.get("/api/v1/users/me", headers=admin.headers)).status_code == 200

    async def test_end_all_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.delete(f"{ADMIN}/users/{uuid.uuid4()}/sessions", headers=admin.headers)
        assert response.status_code == 404


class TestAdjustCredits:
    async def test_grant(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.post(
            f"{ADMIN}/users/{target.id}/credits", json={"amount": 50, "reason": "goodwill"}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["balance"] == 1050
        assert body["transaction"]["actor_id"] == str(admin.id)
        assert body["transaction"]["amount"] == 50 and body["transaction"]["reason"] == "goodwill"
        assert (await client.get("/api/v1/credits", headers=target.headers)).json()["balance"] == 1050

    async def test_deduct(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.post(
            f"{ADMIN}/users/{target.id}/credits", json={"amount": -1000, "reason": "reset"}, headers=admin.headers
        )
        assert response.json()["balance"] == 0

    async def test_below_zero_402(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.post(
            f"{ADMIN}/users/{target.id}/credits", json={"amount": -1001, "reason": "too much"}, headers=admin.headers
        )
        assert response.status_code == 402
        assert response.json()["code"] == "insufficient_credits"
        assert (await client.get("/api/v1/credits", headers=target.headers)).json()["balance"] == 1000

    async def test_unknown_user_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.post(
            f"{ADMIN}/users/{uuid.uuid4()}/credits", json={"amount": 5, "reason": "x"}, headers=admin.headers
        )
        assert response.status_code == 404
        assert response.json()["code"] == "user_not_found"

    @pytest.mark.parametrize(
        "body", [{"amount": 5}, {"amount": 0, "reason": "x"}, {"amount": 5, "reason": "x", "y": 1}]
    )
    async def test_bad_body_422(self, client: httpx.AsyncClient, app: FastAPI, body: dict[str, Any]) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        response = await client.post(f"{ADMIN}/users/{target.id}/credits", json=body, headers=admin.headers)
        assert response.status_code == 422


class TestListOrganizations:
    async def test_paged_with_member_counts(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        owner, member = await create_user(app), await create_user(app)
        big = await create_org(client, owner, "Big")
        await add_member(client, big, owner, member, "member")
        await create_org(client, member, "Small")
        response = await client.get(f"{ADMIN}/organizations", headers=admin.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 2 and body["limit"] == 20 and body["offset"] == 0
        counts = {item["name"]: item["member_count"] for item in body["items"]}
        assert counts == {"Big": 2, "Small": 1}
        page = await client.get(f"{ADMIN}/organizations", params={"limit": 1, "offset": 1}, headers=admin.headers)
        assert len(page.json()["items"]) == 1 and page.json()["total"] == 2

    async def test_search_matches_name_or_slug_literally(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        owner = await create_user(app)
        await create_org(client, owner, "Big 100% Co")
        await create_org(client, owner, "Small")
        await create_org(client, owner, "Big 1000 Co")

        async def names(search: str) -> tuple[list[str], int]:
            response = await client.get(f"{ADMIN}/organizations", params={"search": search}, headers=admin.headers)
            assert response.status_code == 200
            body = response.json()
            return [item["name"] for item in body["items"]], body["total"]

        assert await names("100%") == (["Big 100% Co"], 1)  # % taken literally
        assert await names("big") == (["Big 1000 Co", "Big 100% Co"], 2)  # newest first, any case
        assert await names("small") == (["Small"], 1)
        assert await names("nothing") == ([], 0)


class TestDeleteOrganization:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        owner = await create_user(app)
        org_id = await create_org(client, owner)
        response = await client.delete(f"{ADMIN}/organizations/{org_id}", headers=admin.headers)
        assert response.status_code == 204
        assert (await client.get(f"/api/v1/organizations/{org_id}", headers=owner.headers)).status_code == 404
        [event] = await events(app, "admin.org_deleted")
        assert (event.actor_id, str(event.org_id)) == (admin.id, org_id)

    async def test_unknown_404(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        response = await client.delete(f"{ADMIN}/organizations/{uuid.uuid4()}", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "org_not_found"


class TestAuditEvents:
    async def test_newest_first_and_filters(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        admin = await superuser(app)
        target = await create_user(app)
        org_id = await create_org(client, target)
        await client.patch(f"{ADMIN}/users/{target.id}", json={"full_name": "A"}, headers=admin.headers)
        await client.patch(f"{ADMIN}/users/{target.id}", json={"full_name": "B"}, headers=admin.headers)

        by_action = await client.get(
            f"{ADMIN}/audit-events", params={"action": "admin.user_updated"}, headers=admin.headers
        )
        body = by_action.json()
        assert body["total"] == 2
        assert [item["details"]["changes"]["full_name"] for item in body["items"]] == ["B", "A"]
        assert set(body["items"][0]) == {
            "id",
            "action",
            "actor_id",
            "actor_api_key_id",
            "subject_user_id",
            "org_id",
            "ip_address",
            "details",
            "created_at",
        }

        by_actor = await client.get(f"{ADMIN}/audit-events", params={"actor_id": str(admin.id)}, headers=admin.headers)
        assert {item["actor_id"] for item in by_actor.json()["items"]} == {str(admin.id)}

        by_user = await client.get(f"{ADMIN}/audit-events", params={"user_id": str(target.id)}, headers=admin.headers)
        assert by_user.json()["total"] >= 2
        assert {item["subject_user_id"] for item in by_user.json()["items"]} == {str(target.id)}

        by_org = await client.get(f"{ADMIN}/audit-events", params={"org_id": org_id}, headers=admin.headers)
        assert by_org.json()["total"] >= 1
        assert {item["org_id"] for item in by_org.json()["items"]} == {org_id}

        paged = await client.get(f"{ADMIN}/audit-events", params={"limit": 1}, headers=admin.headers)
        assert len(paged.json()["items"]) == 1 and paged.json()["limit"] == 1
