"""GET /api/v1/admin/users?search=: a case-insensitive substring of the email or the name, exact totals."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.admin import service as admin_service
from app.admin.search import MAX_PIECES, EmailSample, email_keys, email_pieces
from app.core.data import Data
from app.state import state_of
from tests.conftest import requires_postgres
from tests.core.test_data import driver_statements
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


async def test_email_keys_are_bounded() -> None:
    assert len(email_pieces("abcdefghijklmnopqrstuvwxyz0123456789" * 9)) == 12
    pieces, exact_is_key = email_keys("abcdefghijklmnopqrstuvwxyz0123456789" * 9)
    assert len(pieces) == MAX_PIECES == len(set(pieces))
    assert exact_is_key


BULK_SAMPLE = [f"user{n}@example.com" for n in range(0, 1_000_000, 9_901)]  # what pg_stats holds of the bench's bulk


@pytest.mark.parametrize(
    ("search", "sample", "keys"),
    [
        # every sampled email has "use": the exact test holds it too, and becomes a filter
        ("user4242", BULK_SAMPLE, (["r42", "242"], False)),
        ("user4242@example.com", BULK_SAMPLE, (["r42", "242"], False)),
        ("user42", BULK_SAMPLE, (["r42"], False)),  # one piece left is still a key
        ("example.com", BULK_SAMPLE, ([], True)),  # every piece common: the exact ILIKE is the only key
        ("quokka", BULK_SAMPLE, (["quo", "kka"], True)),  # nothing common: as without a sample
        ("user4242", [], (["use", "r42", "242"], True)),
        ("ada", BULK_SAMPLE, ([], True)),
        # exactly half the sample is not "more than half"
        ("abcdef", ["abc", "abc", "x", "y"], (["abc", "def"], True)),
        ("abcdef", ["abc", "abc", "abc", "y"], (["def"], False)),
    ],
)
async def test_email_keys_leave_out_what_most_emails_contain(
    search: str, sample: list[str], keys: tuple[list[str], bool]
) -> None:
    assert email_keys(search, sample) == keys


async def test_common_pieces_go_before_the_bound() -> None:
    """Common pieces are left out before the text's pieces are thinned out to ``MAX_PIECES``: the rare stay."""
    letters = "abcdefghijklmnopqrstuvwx"  # 8 pieces, all in the sample
    assert len(email_keys(letters + "0123456789")[0]) == MAX_PIECES
    assert email_keys(letters + "0123456789", [f"{letters}@example.org"]) == (["012", "345", "678", "789"], False)


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
    async with state_of(app).engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT relname, reloptions FROM pg_class WHERE relname IN (:a, :b)"),
            {"a": "ix_users_email_trgm", "b": "ix_users_full_name_trgm"},
        )
        assert {name: options for name, options in rows} == {
            "ix_users_email_trgm": ["fastupdate=off"],
            "ix_users_full_name_trgm": ["fastupdate=off"],
        }


class FixedSample(EmailSample):
    def __init__(self, emails: list[str]) -> None:
        super().__init__()
        self.fixed = tuple(emails)

    async def emails(self, data: Data) -> tuple[str, ...]:
        return self.fixed


@pytest.mark.parametrize(
    "search", ["user4242", "ER4242x-A@exa", "r42-use-242", "42-use", "exampl", "4242x-b", "elda q"]
)
async def test_the_sample_changes_the_cost_never_the_answer(app: FastAPI, people: dict[str, str], search: str) -> None:
    """Whichever pieces are index keys (none, some, all), the exact test decides."""
    samples = [[], ["user4242x-a@example.com"], ["r42-use-242@example.com", "user4242@example.com"], ["zzz"]]
    answers = []
    for sample in samples:
        users, total = await admin_service.list_users(
            state_of(app).data, limit=100, offset=0, search=search, sample=FixedSample(sample)
        )
        answers.append(({str(user.id) for user in users}, total))
    assert all(answer == answers[0] for answer in answers), answers
    assert answers[0][1] == len(answers[0][0])


async def _analyze(app: FastAPI) -> None:
    async with state_of(app).engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("ANALYZE users"))


async def _bulk_users(app: FastAPI, prefix: str, count: int) -> None:
    """``count`` users ``<prefix><i>@example.com`` by SQL, then fresh statistics (PostgreSQL)."""
    async with state_of(app).sessionmaker() as session:
        await session.execute(
            text(
                "INSERT INTO users (id, email, hashed_password, is_active, is_superuser, is_verified, auth_provider, "
                "created_at, updated_at) SELECT gen_random_uuid(), :prefix || i || '@example.com', 'x', true, false, "
                "true, 'local', now(), now() FROM generate_series(1, :count) AS i"
            ),
            {"prefix": prefix, "count": count},
        )
        await session.commit()
    await _analyze(app)


@requires_postgres()
async def test_sample_is_the_planner_statistics_reread_after_a_while(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _bulk_users(app, "first", 50)
    clock = [1000.0]
    monkeypatch.setattr("app.admin.search.time.monotonic", lambda: clock[0])
    sample = EmailSample()
    data = state_of(app).data
    first = await sample.emails(data)
    assert first and all(email.startswith("first") for email in first)
    async with state_of(app).sessionmaker() as session:
        await session.execute(text("UPDATE users SET email = replace(email, 'first', 'second')"))
        await session.commit()
    await _analyze(app)
    clock[0] += EmailSample.REFRESH_SECONDS - 1
    assert await sample.emails(data) == first  # not read again yet
    clock[0] += 1
    again = await sample.emails(data)
    assert again and all(email.startswith("second") for email in again)


async def test_no_sample_on_sqlite() -> None:
    """SQLite has no statistics view (and no trigram index): no sample, every piece kept. Its own in-memory
    database, so the test runs whichever database the suite is on."""
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        assert await EmailSample().emails(Data(engine, None)) == ()
    finally:
        await engine.dispose()


def _nodes(node: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = [node] if node.get("Node Type") == kind else []
    for child in node.get("Plans", []):
        found += _nodes(child, kind)
    return found


async def _search_plan(
    client: httpx.AsyncClient, app: FastAPI, headers: dict[str, str], search: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The plan (sequential scans off: the test tables are small) of the statement a search runs, and its total."""
    async with driver_statements(monkeypatch) as sent:
        response = await client.get(USERS, params={"search": search}, headers=headers)
    [(statement, parameters)] = [(sql, args) for sql, args in sent if "count(" in sql]
    async with state_of(app).engine.begin() as connection:
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)).scalar()
        assert plan is not None
    root: dict[str, Any] = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return {**root, "total": response.json()["total"]}


@requires_postgres()
async def test_without_common_pieces_the_exact_test_is_the_last_index_key(
    client: httpx.AsyncClient,
    app: FastAPI,
    admin_headers: dict[str, str],
    people: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_of(app).email_sample = FixedSample([])  # no statistics: no piece is common
    plan = await _search_plan(client, app, admin_headers, "User4242", monkeypatch)
    assert plan["total"] == 3  # people's "email", "email_upper" and "name"
    by_index = {node["Index Name"]: node["Index Cond"] for node in _nodes(plan, "Bitmap Index Scan")}
    condition = by_index["ix_users_email_trgm"]
    positions = [condition.find(f"~~ '%{piece}%'") for piece in ("use", "r42", "242")]
    assert all(position >= 0 for position in positions), condition
    assert max(positions) < condition.find("~~* '%User4242%'"), condition
    assert "ix_users_full_name_trgm" in by_index
    [heap] = _nodes(plan, "Bitmap Heap Scan")
    assert "Filter" not in heap, heap  # the recheck is the whole test


@requires_postgres()
async def test_rare_pieces_are_the_index_keys_and_the_exact_test_a_filter(
    client: httpx.AsyncClient,
    app: FastAPI,
    admin_headers: dict[str, str],
    people: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With "use" in most emails (the statistics say so), the email index looks up "r42" and "242" only; the
    exact ILIKE filters the rows they leave."""
    await _bulk_users(app, "user", 300)
    state_of(app).email_sample = EmailSample()  # the app outlives a test: a sample read by an earlier one is kept
    plan = await _search_plan(client, app, admin_headers, "User4242", monkeypatch)
    assert plan["total"] == 3
    by_index = {node["Index Name"]: node["Index Cond"] for node in _nodes(plan, "Bitmap Index Scan")}
    condition = by_index["ix_users_email_trgm"]
    assert "'%r42%'" in condition and "'%242%'" in condition, condition
    assert "'%use%'" not in condition and "~~*" not in condition, condition
    assert "ix_users_full_name_trgm" in by_index
    [heap] = _nodes(plan, "Bitmap Heap Scan")
    assert "~~* '%User4242%'" in heap["Filter"], heap
