from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests import factories
from tests.conftest import AppFactory, client_for
from tests.credits.helpers import audit_events, ledger_rows, ledger_sum, stored_balance
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

SPEND = "/api/v1/credits/spend"


async def spend(
    client: httpx.AsyncClient,
    user: factories.TestUser,
    amount: Any = 10,
    reason: Any = "export",
    key: str | None = None,
) -> httpx.Response:
    headers = dict(user.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(SPEND, json={"amount": amount, "reason": reason}, headers=headers)


class TestReadBalance:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.get("/api/v1/credits", headers=user.headers)
        assert response.status_code == 200
        assert response.json() == {"balance": 1000}

    async def test_after_spend(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await spend(client, user, 250)).status_code == 200
        response = await client.get("/api/v1/credits", headers=user.headers)
        assert response.json() == {"balance": 750}

    async def test_no_profile_is_zero(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        response = await client.get("/api/v1/credits", headers=user.headers)
        assert response.status_code == 200
        assert response.json() == {"balance": 0}

    async def test_unauthenticated_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/credits")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


class TestListTransactions:
    async def test_signup_grant(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.get("/api/v1/credits/transactions", headers=user.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 1 and body["limit"] == 20 and body["offset"] == 0
        (row,) = body["items"]
        assert set(row) == {"id", "amount", "balance_after", "reason", "created_at", "actor_id"}
        assert row["amount"] == 1000 and row["balance_after"] == 1000 and row["actor_id"] is None

    async def test_newest_first(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        for amount in (1, 2, 3):
            assert (await spend(client, user, amount, reason=f"r{amount}")).status_code == 200
        body = (await client.get("/api/v1/credits/transactions", headers=user.headers)).json()
        assert [row["amount"] for row in body["items"]] == [-3, -2, -1, 1000]
        assert [row["balance_after"] for row in body["items"]] == [994, 997, 999, 1000]
        assert body["items"][0]["actor_id"] == str(user.id)

    async def test_paged(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        for amount in (1, 2, 3):
            await spend(client, user, amount)
        response = await client.get(
            "/api/v1/credits/transactions", params={"limit": 2, "offset": 1}, headers=user.headers
        )
        body = response.json()
        assert body["total"] == 4 and body["limit"] == 2 and body["offset"] == 1
        assert [row["amount"] for row in body["items"]] == [-2, -1]

    async def test_bad_limit_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.get("/api/v1/credits/transactions", params={"limit": 101}, headers=user.headers)
        assert response.status_code == 422

    async def test_only_own(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user, other = await create_user(app), await create_user(app)
        await spend(client, other, 5)
        body = (await client.get("/api/v1/credits/transactions", headers=user.headers)).json()
        assert body["total"] == 1
        assert [row["amount"] for row in body["items"]] == [1000]

    async def test_no_profile_empty(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        body = (await client.get("/api/v1/credits/transactions", headers=user.headers)).json()
        assert body["items"] == [] and body["total"] == 0

    async def test_unauthenticated_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/api/v1/credits/transactions")).status_code == 401


class TestSpend:
    async def test_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await spend(client, user, 30, reason="  report export  ")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["balance"] == 970
        transaction = body["transaction"]
        assert transaction["amount"] == -30
        assert transaction["balance_after"] == 970
        assert transaction["reason"] == "report export"
        assert transaction["actor_id"] == str(user.id)
        assert "Idempotent-Replayed" not in response.headers
        assert await stored_balance(app, user.id) == 970
        assert await ledger_sum(app, user.id) == 970

    async def test_audited(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        transaction_id = (await spend(client, user, 30)).json()["transaction"]["id"]
        (event,) = await audit_events(app, "credits.spent", user.id)
        assert event.actor_id == user.id
        assert event.ip_address == "127.0.0.1"
        assert event.details["transaction_id"] == transaction_id
        assert event.details["amount"] == -30 and event.details["balance_after"] == 970

    async def test_whole_balance(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await spend(client, user, 1000)
        assert response.status_code == 200
        assert response.json()["balance"] == 0

    async def test_insufficient_402_changes_nothing(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await spend(client, user, 1001)
        assert response.status_code == 402
        assert response.json()["code"] == "insufficient_credits"
        assert await stored_balance(app, user.id) == 1000
        assert len(await ledger_rows(app, user.id)) == 1
        assert await audit_events(app, "credits.spent", user.id) == []

    async def test_no_profile_402(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app, profile=False)
        response = await spend(client, user, 1)
        assert response.status_code == 402
        assert response.json()["code"] == "insufficient_credits"
        assert await ledger_rows(app, user.id) == []

    @pytest.mark.parametrize(
        "amount",
        [0, -5, 1.5, 10.0, "10", True, None, 1_000_001, 10**30],
        ids=["zero", "negative", "fraction", "float", "string", "bool", "null", "over-max", "huge"],
    )
    async def test_invalid_amount_422(self, client: httpx.AsyncClient, app: FastAPI, amount: Any) -> None:
        user = await create_user(app)
        response = await spend(client, user, amount)
        assert response.status_code == 422
        assert await stored_balance(app, user.id) == 1000

    @pytest.mark.parametrize("reason", ["", "   ", "x" * 256, None, 5], ids=["empty", "blank", "long", "null", "int"])
    async def test_invalid_reason_422(self, client: httpx.AsyncClient, app: FastAPI, reason: Any) -> None:
        user = await create_user(app)
        assert (await spend(client, user, 10, reason=reason)).status_code == 422

    async def test_unknown_field_422(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        response = await client.post(
            SPEND, json={"amount": 1, "reason": "x", "user_id": str(uuid.uuid4())}, headers=user.headers
        )
        assert response.status_code == 422

    async def test_unauthenticated_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(SPEND, json={"amount": 1, "reason": "x"})
        assert response.status_code == 401


class TestSpendIdempotency:
    async def test_replay_returns_first_answer(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = await spend(client, user, 30, key="order-42")
        second = await spend(client, user, 30, key="order-42")
        assert first.status_code == second.status_code == 200
        assert second.json() == first.json()
        assert second.headers["Idempotent-Replayed"] == "true"
        assert await stored_balance(app, user.id) == 970
        assert len(await ledger_rows(app, user.id)) == 2
        assert len(await audit_events(app, "credits.spent", user.id)) == 1

    async def test_replay_after_later_spends(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = await spend(client, user, 30, key="k1")
        await spend(client, user, 100)
        again = await spend(client, user, 30, key="k1")
        assert again.json() == first.json()
        assert again.json()["balance"] == 970
        assert await stored_balance(app, user.id) == 870

    async def test_new_key_charges(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        first = await spend(client, user, 30, key="k1")
        second = await spend(client, user, 30, key="k2")
        assert second.json()["transaction"]["id"] != first.json()["transaction"]["id"]
        assert await stored_balance(app, user.id) == 940

    async def test_other_amount_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await spend(client, user, 30, key="k1")
        response = await spend(client, user, 31, key="k1")
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_reused"
        assert await stored_balance(app, user.id) == 970

    async def test_other_reason_409(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        await spend(client, user, 30, reason="a", key="k1")
        response = await spend(client, user, 30, reason="b", key="k1")
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_reused"

    async def test_key_is_per_user(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user, other = await create_user(app), await create_user(app)
        await spend(client, user, 30, key="shared")
        response = await spend(client, other, 30, key="shared")
        assert response.status_code == 200
        assert response.headers.get("Idempotent-Replayed") is None
        assert await stored_balance(app, other.id) == 970

    async def test_refused_spend_keeps_key_free(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await spend(client, user, 2000, key="k1")).status_code == 402
        assert (await spend(client, user, 20, key="k1")).status_code == 200
        assert await stored_balance(app, user.id) == 980

    @pytest.mark.parametrize(
        "key", ["", " padded", "x" * 256, "tab\there", "caf\u00e9"], ids=["empty", "space", "long", "control", "latin1"]
    )
    async def test_invalid_key_422(self, client: httpx.AsyncClient, app: FastAPI, key: str) -> None:
        user = await create_user(app)
        headers: list[tuple[bytes, bytes]] = [
            *((name.encode(), value.encode()) for name, value in user.headers.items()),
            (b"Idempotency-Key", key.encode("latin-1")),
        ]
        response = await client.post(SPEND, json={"amount": 1, "reason": "x"}, headers=headers)
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert await stored_balance(app, user.id) == 1000

    async def test_longest_key_ok(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        assert (await spend(client, user, 1, key="k" * 255)).status_code == 200


async def _spend_many(
    clients: list[httpx.AsyncClient], user: factories.TestUser, n: int, **kwargs: Any
) -> list[httpx.Response]:
    return await asyncio.gather(*(spend(clients[i % len(clients)], user, **kwargs) for i in range(n)))


async def _check_invariant(app: FastAPI, user: factories.TestUser, balance: int) -> None:
    assert await stored_balance(app, user.id) == balance
    assert await ledger_sum(app, user.id) == balance
    rows = await ledger_rows(app, user.id)
    assert sorted(row.balance_after for row in rows if row.amount < 0) == list(range(balance, 1000, 30)), (
        "every spend saw a distinct, consistent balance"
    )


class TestSpendConcurrency:
    """Real parallel requests. PostgreSQL: row locks on the profile; SQLite: one writer at a time. Both must hold."""

    async def test_one_app(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        responses = await _spend_many([client], user, 40, amount=30)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 33 and statuses.count(402) == 7
        await _check_invariant(app, user, 10)

    async def test_two_apps(self, client: httpx.AsyncClient, app: FastAPI, make_app: AppFactory) -> None:
        other = await make_app(DATABASE_POOL_SIZE=10, DATABASE_MAX_OVERFLOW=0)
        user = await create_user(app)
        async with client_for(other) as other_client:
            responses = await _spend_many([client, other_client], user, 40, amount=30)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 33 and statuses.count(402) == 7
        await _check_invariant(app, user, 10)

    async def test_same_key_one_app(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        user = await create_user(app)
        responses = await _spend_many([client], user, 20, amount=30, key="same")
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["transaction"]["id"] for r in responses}) == 1
        assert {r.json()["balance"] for r in responses} == {970}
        assert await stored_balance(app, user.id) == 970
        assert await ledger_sum(app, user.id) == 970

    async def test_same_key_two_apps(self, client: httpx.AsyncClient, app: FastAPI, make_app: AppFactory) -> None:
        other = await make_app(DATABASE_POOL_SIZE=10, DATABASE_MAX_OVERFLOW=0)
        user = await create_user(app)
        async with client_for(other) as other_client:
            responses = await _spend_many([client, other_client], user, 20, amount=30, key="same")
        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["transaction"]["id"] for r in responses}) == 1
        assert await stored_balance(app, user.id) == 970
        assert len(await ledger_rows(app, user.id)) == 2

    async def test_same_key_for_last_credits(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        """Losers of the race find the balance too low, yet answer with the winner's transaction, not 402."""
        user = await create_user(app)
        responses = await _spend_many([client], user, 20, amount=1000, key="all-in")
        assert {r.status_code for r in responses} == {200}
        assert {r.json()["balance"] for r in responses} == {0}
        assert len({r.json()["transaction"]["id"] for r in responses}) == 1
        assert await ledger_sum(app, user.id) == 0
