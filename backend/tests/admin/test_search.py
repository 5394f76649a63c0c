"""GET /api/v1/admin/users?search=: a case-insensitive substring of the email or the name, exact totals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import event, text

from app.admin import service as admin_service
from app.admin.service import MAX_PIECES, email_pieces
from tests.conftest import requires_postgres
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

USERS = "/api/v1/admin/users"


@pytest.mark.parametrize(
    ("search", "pieces"),
    [
        ("user4242", ["use", "r42", "242"]),
        ("QuoKKa", ["quo", "kka"]),
        ("4242", ["424", "242"]),
        ("user4242@example.com", ["use", "r42", "242", "exa", "mpl", "ple", "com"]),
        # fewer than two pieces: nothing to add to the exact test
        ("ada", []),
        ("42", []),
        ("ab-cde", []),
        ("aaaaaa", []),
        ("Zoë-Ann", []),  # only ASCII letters and digits are cut
        ("100%_sure", ["100", "sur", "ure"]),
    ],
)
async def test_email_pieces(search: str, pieces: list[str]) -> None:
    assert email_pieces(search) == pieces


async def test_email_pieces_are_bounded() -> None:
    pieces = email_pieces("abcdefghijklmnopqrstuvwxyz0123456789" * 9)
    assert len(pieces) == MAX_PIECES == len(set(pieces))


@pytest_asyncio.fixture
async def people(app: FastAPI) -> dict[str, str]:
    """Users whose email or name holds the searched text, and one holding every piece of it but not the text."""
    made = {
        "email": await create_user(app, email="user4242x-a@example.com", full_name="Grace Hopper", logged_in=False),
        "email_upper": await create_user(app, email="ADMIN.User4242@Example.COM", full_name=None, logged_in=False),
        "name": await create_user(app, email="zq-1@example.com", full_name="Zelda QUOKKA-User4242", logged_in=False),
        "pieces_only": await create_user(app, email="r42-use-242@example.com", full_name="Use R42", logged_in=False),
        "other": await create_user(app, email="someone@elsewhere.org", full_name="Alan Turing", logged_in=False),
    }
    return {key: str(user.id) for key, user in made.items()}


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("user4242", {"email", "email_upper", "name"}),
        ("USER4242", {"email", "email_upper", "name"}),
        ("ER4242x-A@exa", {"email"}),  # across letters, digits and punctuation, mid-string
        ("n.user4242@example.c", {"email_upper"}),  # the email was stored lower-case
        ("quokka-user", {"name"}),
        ("elda q", {"name"}),
        ("r42-use-242", {"pieces_only"}),
        ("42-use", {"pieces_only"}),
        ("r42", {"email", "email_upper", "name", "pieces_only"}),
        ("use r4", {"pieces_only"}),  # the name
        ("4242x-b", set()),
        ("exampl", {"email", "email_upper", "name", "pieces_only"}),
    ],
)
async def test_substring_of_email_or_name_case_insensitive(
    client: httpx.AsyncClient, admin_headers: dict[str, str], people: dict[str, str], search: str, expected: set[str]
) -> None:
    response = await client.get(USERS, params={"search": search, "limit": 100}, headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    found = {key for key, user_id in people.items() if user_id in {item["id"] for item in body["items"]}}
    assert found == expected
    assert body["total"] == len(body["items"]) == len(expected)


async def test_total_is_exact_beyond_the_page(
    client: httpx.AsyncClient, app: FastAPI, admin_headers: dict[str, str]
) -> None:
    for i in range(5):
        await create_user(app, email=f"page{i}-user4242@example.com", logged_in=False)
    await create_user(app, email="page-user4243@example.com", logged_in=False)
    seen: list[str] = []
    for offset in (0, 2, 4, 6):
        response = await client.get(
            USERS, params={"search": "USER4242", "limit": 2, "offset": offset}, headers=admin_headers
        )
        body = response.json()
        assert body["total"] == 5
        seen += [item["id"] for item in body["items"]]
    assert len(seen) == len(set(seen)) == 5


async def test_search_with_filters(client: httpx.AsyncClient, app: FastAPI, admin_headers: dict[str, str]) -> None:
    inactive = await create_user(app, email="user4242-off@example.com", is_active=False, logged_in=False)
    await create_user(app, email="user4242-on@example.com", logged_in=False)
    response = await client.get(USERS, params={"search": "user4242", "is_active": "false"}, headers=admin_headers)
    body = response.json()
    assert ([item["id"] for item in body["items"]], body["total"]) == ([str(inactive.id)], 1)
    response = await client.get(USERS, params={"search": "user4242", "is_superuser": "true"}, headers=admin_headers)
    assert (response.json()["items"], response.json()["total"]) == ([], 0)


@pytest_asyncio.fixture
async def admin_headers(app: FastAPI) -> dict[str, str]:
    admin = await create_user(app, email="root@superusers.net", full_name="Root", is_superuser=True)
    return admin.headers


@requires_postgres()
async def test_trigram_indexes_have_no_pending_list(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT relname, reloptions FROM pg_class WHERE relname IN (:a, :b)"),
            {"a": "ix_users_email_trgm", "b": "ix_users_full_name_trgm"},
        )
        assert {name: options for name, options in rows} == {
            "ix_users_email_trgm": ["fastupdate=off"],
            "ix_users_full_name_trgm": ["fastupdate=off"],
        }


@requires_postgres()
async def test_the_pieces_are_index_conditions_before_the_exact_test(app: FastAPI) -> None:
    """The planner hands every piece to the email trigram index, the exact ILIKE as the last scan key."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "count(" in statement:
            captured.append((statement, parameters))

    engine = app.state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with app.state.sessionmaker() as session:
            await admin_service.list_users(session, limit=10, offset=0, search="User4242")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = captured
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", tuple(parameters))).scalar()
    root = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]

    def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = [node] if node.get("Node Type") == "Bitmap Index Scan" else []
        for child in node.get("Plans", []):
            found += scans(child)
        return found

    by_index = {node["Index Name"]: node["Index Cond"] for node in scans(root)}
    condition = by_index["ix_users_email_trgm"]
    positions = [condition.find(f"~~ '%{piece}%'") for piece in ("use", "r42", "242")]
    assert all(position >= 0 for position in positions), condition
    assert max(positions) < condition.find("~~* '%User4242%'"), condition
    assert "ix_users_full_name_trgm" in by_index
