"""Races across two app instances: two uvicorn processes on two ports sharing one PostgreSQL database.

Each race sends the competing requests to both instances at once, so that no guarantee can rest on a lock or a
cache inside one process. The servers start once for the module, both with FIRST_SUPERUSER_* set (they race the
bootstrap too). tests/test_scale_out.py covers migrations run concurrently and revocation seen by every worker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from app.users.service import SIGNUP_CREDITS_REASON
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _admin, alembic_upgrade, in_thread, requires_postgres
from tests.core.uvicorn_server import uvicorn_server
from tests.factories import DEFAULT_PASSWORD
from tests.test_scale_out import _query

pytestmark = [pytest.mark.asyncio, requires_postgres()]

API = "/api/v1"
ROOT_EMAIL = "root-two-instances@example.com"
ROOT_PASSWORD = "Two-instances-root-password-58"
ROUNDS = 5  # each race is run several times: a lost race must not depend on lucky timing


@dataclass
class Pair:
    dsn: str
    urls: tuple[str, str]

    def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return _query(self.dsn, sql, *args)

    def value(self, sql: str, *args: object) -> Any:
        return self.query(sql, *args)[0][0]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    name = f"two_instances_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        in_thread(alembic_upgrade, url)
        bootstrap = {"FIRST_SUPERUSER_EMAIL": ROOT_EMAIL, "FIRST_SUPERUSER_PASSWORD": ROOT_PASSWORD}
        with uvicorn_server(url, workers=1, **bootstrap) as a, uvicorn_server(url, workers=1, **bootstrap) as b:
            yield Pair(dsn=f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}", urls=(a, b))
    finally:
        in_thread(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: uuid.UUID
    email: str
    tokens: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.tokens["access_token"])


async def signup(http: httpx.AsyncClient, pair: Pair) -> Account:
    """A user registered on one instance (profile and credits) and logged in on the other."""
    email = f"two-{uuid.uuid4().hex[:10]}@example.com"
    registered = await http.post(
        f"{pair.urls[0]}{API}/auth/register", json={"email": email, "password": DEFAULT_PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    tokens = await login(http, pair.urls[1], email, DEFAULT_PASSWORD)
    return Account(id=uuid.UUID(registered.json()["id"]), email=email, tokens=tokens)


async def login(http: httpx.AsyncClient, base_url: str, email: str, password: str) -> dict[str, Any]:
    response = await http.post(f"{base_url}{API}/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def org_with(http: httpx.AsyncClient, pair: Pair, owner: Account, other: Account, via: str, role: str) -> str:
    """An organization made by ``owner`` on one instance; ``other`` added (``via="members"``) or invited
    (``via="invitations"``) on the other. Returns the org id, and the invitation token for an invitation."""
    org = await http.post(f"{pair.urls[0]}{API}/organizations", json={"name": "Race"}, headers=owner.headers)
    org_id: str = org.json()["id"]
    answer = await http.post(
        f"{pair.urls[1]}{API}/organizations/{org_id}/{via}",
        json={"email": other.email, "role": role},
        headers=owner.headers,
    )
    assert answer.status_code == 201, answer.text
    return org_id if via == "members" else f"{org_id} {answer.json()['token']}"


async def on_both(
    http: httpx.AsyncClient, pair: Pair, method: str, path: str, n: int, **kwargs: Any
) -> list[httpx.Response]:
    """``n`` copies of one request, alternating between the two instances, all at once."""
    return list(
        await asyncio.gather(*(http.request(method, f"{pair.urls[i % 2]}{API}{path}", **kwargs) for i in range(n)))
    )


class TestFirstSuperuser:
    async def test_one_superuser(self, pair: Pair, http: httpx.AsyncClient) -> None:
        users = pair.query("SELECT is_superuser, is_active FROM users WHERE email = $1", ROOT_EMAIL)
        assert [(u["is_superuser"], u["is_active"]) for u in users] == [(True, True)]
        for base_url in pair.urls:
            await login(http, base_url, ROOT_EMAIL, ROOT_PASSWORD)


class TestCredits:
    async def test_no_overspend(self, pair: Pair, http: httpx.AsyncClient) -> None:
        for _ in range(ROUNDS):
            user = await signup(http, pair)
            body = {"amount": 50, "reason": "race"}
            answers = await on_both(http, pair, "POST", "/credits/spend", 30, json=body, headers=user.headers)
            assert Counter(a.status_code for a in answers) == {200: 20, 402: 10}, [a.text for a in answers]
            user_id = user.id
            assert pair.value("SELECT credits FROM profiles WHERE id = $1", user_id) == 0
            assert pair.value("SELECT sum(amount) FROM credit_transactions WHERE user_id = $1", user_id) == 0
            balances_after = sorted(a.json()["balance"] for a in answers if a.status_code == 200)
            assert balances_after == list(range(0, 1000, 50))  # each success saw its own, serialised balance

    async def test_idempotency_key_spends_once(self, pair: Pair, http: httpx.AsyncClient) -> None:
        user = await signup(http, pair)
        headers = {**user.headers, "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
        body = {"amount": 7, "reason": "once"}
        answers = await on_both(http, pair, "POST", "/credits/spend", 10, json=body, headers=headers)
        ok = [a for a in answers if a.status_code == 200]
        assert ok and all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
        assert len({a.json()["transaction"]["id"] for a in ok}) == 1
        assert pair.value("SELECT credits FROM profiles WHERE id = $1", user.id) == 993
        assert pair.value("SELECT count(*) FROM credit_transactions WHERE user_id = $1", user.id) == 2


class TestProfile:
    async def test_get_or_create_gives_one_profile(self, pair: Pair, http: httpx.AsyncClient) -> None:
        for _ in range(ROUNDS):
            user = await signup(http, pair)
            user_id = user.id
            pair.query("DELETE FROM credit_transactions WHERE user_id = $1", user_id)
            pair.query("DELETE FROM profiles WHERE id = $1", user_id)  # a user without a profile yet
            answers = await on_both(http, pair, "POST", "/profile", 8, json={"full_name": "Race"}, headers=user.headers)
            assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
            assert len({a.json()["id"] for a in answers}) == 1
            assert pair.value("SELECT count(*) FROM profiles WHERE id = $1", user_id) == 1
            ledger = pair.query("SELECT amount, reason FROM credit_transactions WHERE user_id = $1", user_id)
            assert [(row["amount"], row["reason"]) for row in ledger] == [(1000, SIGNUP_CREDITS_REASON)]


class TestLastOwner:
    async def test_never_zero_owners(self, pair: Pair, http: httpx.AsyncClient) -> None:
        a, b = pair.urls
        for _ in range(ROUNDS):
            alice, bob = await signup(http, pair), await signup(http, pair)
            org_id = await org_with(http, pair, alice, bob, "members", "owner")
            members = f"{API}/organizations/{org_id}/members"
            # Each owner demotes the other, and each leaves, on different instances, all at the same time.
            answers = await asyncio.gather(
                http.patch(f"{a}{members}/{bob.id}", json={"role": "member"}, headers=alice.headers),
                http.patch(f"{b}{members}/{alice.id}", json={"role": "member"}, headers=bob.headers),
                http.delete(f"{b}{members}/{bob.id}", headers=bob.headers),
                http.delete(f"{a}{members}/{alice.id}", headers=alice.headers),
            )
            assert all(r.status_code in (200, 204, 403, 404, 409) for r in answers), [r.text for r in answers]
            assert any(r.status_code == 409 and r.json()["code"] == "last_owner" for r in answers)
            owners = pair.value(
                "SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'owner'", uuid.UUID(org_id)
            )
            assert owners >= 1


class TestRefreshRotation:
    async def test_concurrent_refreshes_never_diverge(self, pair: Pair, http: httpx.AsyncClient) -> None:
        for _ in range(ROUNDS):
            user = await signup(http, pair)
            body = {"refresh_token": user.tokens["refresh_token"]}
            answers = await on_both(http, pair, "POST", "/auth/refresh", 8, json=body)
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            assert len({a.json()["refresh_token"] for a in answers}) == 1
            current = answers[0].json()["refresh_token"]
            for base_url in pair.urls:  # the one token both instances handed out keeps the session alive
                follow = await http.post(f"{base_url}{API}/auth/refresh", json={"refresh_token": current})
                assert follow.status_code == 200, follow.text
                current = follow.json()["refresh_token"]


class TestInvitationAccept:
    async def test_accept_twice_gives_one_membership(self, pair: Pair, http: httpx.AsyncClient) -> None:
        for _ in range(ROUNDS):
            owner, guest = await signup(http, pair), await signup(http, pair)
            org_id, token = (await org_with(http, pair, owner, guest, "invitations", "member")).split()
            body = {"token": token}
            answers = await on_both(http, pair, "POST", "/invitations/accept", 6, json=body, headers=guest.headers)
            statuses = Counter(a.status_code for a in answers)
            assert statuses[200] == 1 and set(statuses) <= {200, 404, 409}, [a.text for a in answers]
            members = pair.value(
                "SELECT count(*) FROM memberships WHERE org_id = $1 AND user_id = $2", uuid.UUID(org_id), guest.id
            )
            assert members == 1
            events = pair.value(
                "SELECT count(*) FROM audit_events WHERE action = 'invitation.accepted' AND org_id = $1",
                uuid.UUID(org_id),
            )
            assert events == 1
