"""Organization writes on the one write path (``TxDep``, app/core/data.py): what a write request sends, the
request's address in every audit event it writes, and races answered as conflicts, never as 500s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth.identity import SESSION_USER
from app.core.data import Query
from app.orgs import api_keys
from app.orgs import service as org_service
from app.orgs.models import OrgRole
from app.state import state_of
from tests import factories
from tests.conftest import AppFactory, client_for, requires_postgres
from tests.core.test_data import _flat, _sql, statements_sent
from tests.factories import create_user
from tests.orgs.helpers import API, make_api_key, make_invitation, make_org, member_of, roles

pytestmark = pytest.mark.asyncio

ORGS = f"{API}/organizations"
BEGIN, COMMIT, ROLLBACK = "BEGIN;", "COMMIT;", "ROLLBACK;"


def org_url(org_id: uuid.UUID, rest: str = "") -> str:
    return f"{ORGS}/{org_id}{rest}"


# --- what a write request sends (PostgreSQL: asyncpg's query log) ---------------------------------------------


async def _sent(
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    caller: factories.TestUser,
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    status: int,
) -> list[str]:
    async with client_for(app) as client:
        assert (await client.get(f"{API}/users/me", headers=caller.headers)).status_code == 200  # last_used_at set
        async with statements_sent(app, monkeypatch) as queries:
            response = await send(client)
    assert response.status_code == status, response.text
    return [_flat(q) for q in queries]


def _expected(*steps: Query[Any] | str) -> list[str]:
    return [step if isinstance(step, str) else _sql(step) for step in steps]


@requires_postgres()
class TestStatementsSent:
    """The caller's lookup and the guard outside any transaction, then one transaction of the write's own
    statements (the lock first where the last-owner rule applies): no ORM round trips, no read-backs."""

    async def test_role_change(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        member = await member_of(app, org_id, OrgRole.MEMBER, logged_in=False)
        sent = await _sent(
            app,
            monkeypatch,
            owner,
            lambda c: c.patch(org_url(org_id, f"/members/{member.id}"), json={"role": "admin"}, headers=owner.headers),
            200,
        )
        s = org_service
        assert sent == _expected(
            SESSION_USER, s._ACCESS, BEGIN, s._LOCK_ORG, s._ROLE, s._TARGET, s._SET_ROLE, audit.RECORD, COMMIT
        )

    async def test_the_last_owner_refused_rolls_back(
        self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app = await make_app()
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        sent = await _sent(
            app,
            monkeypatch,
            owner,
            lambda c: c.delete(org_url(org_id, f"/members/{owner.id}"), headers=owner.headers),
            409,
        )
        s = org_service
        assert sent == _expected(SESSION_USER, s._ACCESS, BEGIN, s._LOCK_ORG, s._ROLE, s._TARGET, ROLLBACK)

    async def test_refused_by_the_guard_sends_no_begin(
        self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app = await make_app()
        owner = await create_user(app, logged_in=False)
        org_id = await make_org(app, owner)
        member = await member_of(app, org_id, OrgRole.MEMBER)
        sent = await _sent(
            app,
            monkeypatch,
            member,
            lambda c: c.patch(org_url(org_id), json={"name": "Mine"}, headers=member.headers),
            403,
        )
        assert sent == _expected(SESSION_USER, org_service._ACCESS)

    async def test_create_org(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        user = await create_user(app)
        sent = await _sent(
            app, monkeypatch, user, lambda c: c.post(ORGS, json={"name": "Acme"}, headers=user.headers), 201
        )
        s = org_service
        assert sent == _expected(SESSION_USER, BEGIN, s._SLUGS_LIKE, s._NEW_ORG, s._ADD, audit.RECORD, COMMIT)

    async def test_accept_invitation(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        owner = await create_user(app, logged_in=False)
        org_id = await make_org(app, owner)
        invitee = await create_user(app)
        _, token = await make_invitation(app, org_id, owner.id, email=invitee.email)
        sent = await _sent(
            app,
            monkeypatch,
            invitee,
            lambda c: c.post(f"{API}/invitations/accept", json={"token": token}, headers=invitee.headers),
            200,
        )
        s = org_service
        assert sent == _expected(SESSION_USER, BEGIN, s._INVITATION_BY_TOKEN, s._ACCEPT, s._ADD, audit.RECORD, COMMIT)

    async def test_create_api_key(self, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        app = await make_app()
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        sent = await _sent(
            app,
            monkeypatch,
            owner,
            lambda c: c.post(
                org_url(org_id, "/api-keys"), json={"name": "ci", "role": "member"}, headers=owner.headers
            ),
            201,
        )
        assert sent == _expected(SESSION_USER, org_service._ACCESS, BEGIN, api_keys._NEW_KEY, audit.RECORD, COMMIT)


# --- the request's address and actor in every event ----------------------------------------------------------

ADDRESS = "203.0.113.7"


async def _events(app: FastAPI, org_id: uuid.UUID) -> list[tuple[str, str | None, uuid.UUID | None]]:
    async with state_of(app).sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent.action, AuditEvent.ip_address, AuditEvent.actor_api_key_id)
            .where(AuditEvent.org_id == org_id)
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
        return [(action, ip, key_id) for action, ip, key_id in rows]


async def test_every_event_of_an_organization_carries_the_requests_address(app: FastAPI) -> None:
    owner = await create_user(app)
    admin = await create_user(app)
    other = await create_user(app)
    invitee = await create_user(app)
    async with client_for(app, client_addr=(ADDRESS, 4711)) as client:

        async def ok(response: Awaitable[httpx.Response], status: int = 200) -> dict[str, Any]:
            answer = await response
            assert answer.status_code == status, answer.text
            return answer.json() if answer.content else {}

        org_id = uuid.UUID((await ok(client.post(ORGS, json={"name": "Acme"}, headers=owner.headers), 201))["id"])
        h = owner.headers
        await ok(client.patch(org_url(org_id), json={"name": "Acme 2"}, headers=h))
        await ok(client.post(org_url(org_id, "/members"), json={"email": admin.email, "role": "admin"}, headers=h), 201)
        await ok(client.post(org_url(org_id, "/members"), json={"email": other.email}, headers=h), 201)
        await ok(client.patch(org_url(org_id, f"/members/{other.id}"), json={"role": "admin"}, headers=h))
        invited = await ok(
            client.post(org_url(org_id, "/invitations"), json={"email": "x@example.com"}, headers=h), 201
        )
        await ok(client.delete(org_url(org_id, f"/invitations/{invited['id']}"), headers=h), 204)
        token = (await ok(client.post(org_url(org_id, "/invitations"), json={"email": invitee.email}, headers=h), 201))[
            "token"
        ]
        await ok(client.post(f"{API}/invitations/accept", json={"token": token}, headers=invitee.headers))
        key = await ok(
            client.post(org_url(org_id, "/api-keys"), json={"name": "ci", "role": "admin"}, headers=admin.headers), 201
        )
        bearer = {"Authorization": f"Bearer {key['key']}"}
        await ok(client.patch(org_url(org_id, f"/members/{other.id}"), json={"role": "member"}, headers=bearer))
        await ok(client.delete(org_url(org_id, f"/members/{other.id}"), headers=bearer), 204)
        await ok(client.delete(org_url(org_id, f"/api-keys/{key['id']}"), headers=h), 204)
        await ok(client.post(org_url(org_id, "/transfer-ownership"), json={"user_id": str(admin.id)}, headers=h))
        await ok(client.delete(org_url(org_id, f"/members/{owner.id}"), headers=h), 204)
        await ok(client.delete(org_url(org_id), headers=admin.headers), 204)
    events = await _events(app, org_id)
    key_id = uuid.UUID(key["id"])
    assert [(action, by_key) for action, _, by_key in events] == [
        ("org.created", None),
        ("org.updated", None),
        ("member.added", None),
        ("member.added", None),
        ("member.role_changed", None),
        ("invitation.created", None),
        ("invitation.revoked", None),
        ("invitation.created", None),
        ("invitation.accepted", None),
        ("api_key.created", None),
        ("member.role_changed", key_id),
        ("member.removed", key_id),
        ("api_key.revoked", None),
        ("org.ownership_transferred", None),
        ("member.left", None),
        ("org.deleted", None),
    ]
    assert {ip for _, ip, _ in events} == {ADDRESS}


async def test_organizations_deleted_by_other_domains_keep_the_address(app: FastAPI) -> None:
    """The admin's and the account deletion's calls into the organizations (their session as a ``Tx``)."""
    admin = await create_user(app, is_superuser=True)
    user = await create_user(app)
    by_admin = await make_org(app, user, name="By admin")
    with_user = await make_org(app, user, name="With user")
    async with client_for(app, client_addr=(ADDRESS, 4711)) as client:
        response = await client.delete(f"{API}/admin/organizations/{by_admin}", headers=admin.headers)
        assert response.status_code == 204, response.text
        response = await client.request(
            "DELETE", f"{API}/users/me", json={"current_password": user.password}, headers=user.headers
        )
        assert response.status_code == 204, response.text
    assert [(a, ip) for a, ip, _ in await _events(app, by_admin)][-2:] == [
        ("org.deleted", ADDRESS),
        ("admin.org_deleted", ADDRESS),
    ]
    assert [(a, ip) for a, ip, _ in await _events(app, with_user)][-1] == ("org.deleted", ADDRESS)


async def test_a_refused_change_writes_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    owner = await create_user(app)
    org_id = await make_org(app, owner, name="Mine", slug="mine")
    await make_org(app, owner, name="Taken", slug="taken")
    response = await client.patch(org_url(org_id), json={"name": "Renamed", "slug": "taken"}, headers=owner.headers)
    assert response.status_code == 409 and response.json()["code"] == "slug_taken"
    org = (await client.get(org_url(org_id), headers=owner.headers)).json()
    assert (org["name"], org["slug"]) == ("Mine", "mine")
    assert [a for a, _, _ in await _events(app, org_id)] == ["org.created"]


async def test_an_update_answers_what_was_written(client: httpx.AsyncClient, app: FastAPI) -> None:
    owner = await create_user(app)
    org_id = await make_org(app, owner)
    before = (await client.get(org_url(org_id), headers=owner.headers)).json()
    response = await client.patch(org_url(org_id), json={"name": "New name"}, headers=owner.headers)
    assert response.status_code == 200
    after = (await client.get(org_url(org_id), headers=owner.headers)).json()
    assert response.json() == after and after["name"] == "New name" and after["role"] == "owner"
    assert after["updated_at"] > before["updated_at"]
    unchanged = await client.patch(org_url(org_id), json={"name": "New name"}, headers=owner.headers)
    assert unchanged.json() == after  # nothing changed: nothing written, no event
    assert [a for a, _, _ in await _events(app, org_id)] == ["org.created", "org.updated"]


# --- races: a constraint decides, the answer is a conflict -------------------------------------------------


@requires_postgres()
class TestConflictRaces:
    async def test_one_slug_two_creators(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        users = [await create_user(app) for _ in range(3)]
        answers = await asyncio.gather(
            *(client.post(ORGS, json={"name": "Race", "slug": "race"}, headers=u.headers) for u in users)
        )
        assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
        assert {a.json()["code"] for a in answers if a.status_code == 409} == {"slug_taken"}

    async def test_one_name_many_creators_all_get_a_slug(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        users = [await create_user(app) for _ in range(4)]
        answers = await asyncio.gather(*(client.post(ORGS, json={"name": "Same"}, headers=u.headers) for u in users))
        assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
        assert len({a.json()["slug"] for a in answers}) == 4

    async def test_one_person_added_twice_at_once(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        admin = await member_of(app, org_id, OrgRole.ADMIN)
        newcomer = await create_user(app, logged_in=False)
        body = {"email": newcomer.email, "role": "member"}
        answers = await asyncio.gather(
            *(client.post(org_url(org_id, "/members"), json=body, headers=h) for h in (owner.headers, admin.headers))
        )
        assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
        assert (await roles(app, org_id))[newcomer.id] == "member"

    async def test_revoking_a_key_while_its_creator_is_demoted(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        owner = await create_user(app)
        org_id = await make_org(app, owner)
        admin = await member_of(app, org_id, OrgRole.ADMIN)
        key_id, _ = await make_api_key(app, org_id, admin.id)
        answers = await asyncio.gather(
            client.delete(org_url(org_id, f"/api-keys/{key_id}"), headers=owner.headers),
            client.patch(org_url(org_id, f"/members/{admin.id}"), json={"role": "member"}, headers=owner.headers),
        )
        assert answers[0].status_code in {204, 404} and answers[1].status_code == 200, [a.text for a in answers]
        events = [a for a, _, _ in await _events(app, org_id)]
        assert events.count("api_key.revoked") == 1  # revoked once, by whichever came first
