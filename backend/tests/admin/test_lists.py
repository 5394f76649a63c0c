"""The admin user and audit-event lists (app/core/data.py): every statement shape (which filters are present, the
search's pieces) answers as a plain reading of the filters says, page by page with exact totals; each shape's
statements are built, and on PostgreSQL compiled, once."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from app.admin import service as admin_service
from app.admin.search import user_search
from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.core.data import Query
from app.core.db import utcnow
from app.core.driver import DriverStatement
from app.state import state_of
from tests.admin.test_search import FixedSample
from tests.conftest import requires_postgres
from tests.factories import create_user

pytestmark = pytest.mark.asyncio

TRISTATE = (None, True, False)


@dataclass(frozen=True)
class Person:
    email: str
    full_name: str | None
    is_active: bool
    is_superuser: bool


PEOPLE = [  # oldest first
    Person("quokka.one@example.com", "Ada Lovelace", True, False),
    Person("two@quokka.org", None, False, True),
    Person("three@example.com", "Zed QUOKKA", False, False),
    Person("four@example.com", "Bob Ada", True, True),
    Person("quokkafive@example.com", "Eve", True, False),
    Person("six@example.com", "Fay", False, True),
]

SEARCHES = {
    "none": (None, FixedSample([])),
    "pieces, exact test a key": ("QuoKKa", FixedSample([])),
    "no pieces": ("ada", FixedSample([])),
    "a common piece left out, exact test a filter": ("quokka", FixedSample(["quo@x", "quo@y", "zzz"])),
}


async def test_the_searches_cover_every_kind_of_shape() -> None:
    assert user_search("QuoKKa").shape == (2, True)
    assert user_search("ada").shape == (0, True)
    assert user_search("quokka", ["quo@x", "quo@y", "zzz"]).shape == (1, False)


def _matches(person: Person, search: str | None, is_active: bool | None, is_superuser: bool | None) -> bool:
    if is_active is not None and person.is_active != is_active:
        return False
    if is_superuser is not None and person.is_superuser != is_superuser:
        return False
    if search is None:
        return True
    text = search.lower()
    return text in person.email or text in (person.full_name or "").lower()


@pytest.mark.parametrize("kind", list(SEARCHES))
async def test_every_user_filter_combination(app: FastAPI, kind: str) -> None:
    search, sample = SEARCHES[kind]
    ids = {person: str((await create_user(app, logged_in=False, **vars(person))).id) for person in PEOPLE}
    data = state_of(app).data
    for is_active, is_superuser in itertools.product(TRISTATE, TRISTATE):
        filters: dict[str, Any] = {"search": search, "is_active": is_active, "is_superuser": is_superuser}
        expected = [ids[p] for p in reversed(PEOPLE) if _matches(p, search, is_active, is_superuser)]
        rows, total = await admin_service.list_users(data, limit=100, offset=0, sample=sample, **filters)
        assert ([str(row.id) for row in rows], total) == (expected, len(expected)), filters
        paged: list[str] = []
        for offset in range(0, len(PEOPLE) + 2, 2):  # the last page is past the end: the total still holds
            rows, total = await admin_service.list_users(data, limit=2, offset=offset, sample=sample, **filters)
            assert total == len(expected), (filters, offset)
            paged += [str(row.id) for row in rows]
        assert paged == expected, filters


EVENT_FILTERS = ("actor_id", "user_id", "org_id", "action")


async def test_every_audit_filter_combination(app: FastAPI) -> None:
    actor, other_actor, subject, other_subject, org, other_org = (uuid.uuid4() for _ in range(6))
    start = utcnow()
    events = [  # oldest first: every combination of the four filters matches some
        {
            "id": uuid.uuid4(),
            "action": ("x.one", "x.two")[(i // 3) % 2],
            "actor_id": (actor, other_actor, None)[i % 3],
            "subject_user_id": (subject, other_subject)[i % 2],
            "org_id": (org, other_org, None)[(i // 2) % 3],
            "ip_address": None,
            "details": {"n": i},
            "created_at": start + timedelta(seconds=i),
        }
        for i in range(12)
    ]
    async with state_of(app).sessionmaker() as session:
        await session.execute(insert(AuditEvent), events)
        await session.commit()
    wanted: dict[str, Any] = {"actor_id": actor, "user_id": subject, "org_id": org, "action": "x.one"}
    column = {"actor_id": "actor_id", "user_id": "subject_user_id", "org_id": "org_id", "action": "action"}
    data = state_of(app).data
    for count in range(len(EVENT_FILTERS) + 1):
        for names in itertools.combinations(EVENT_FILTERS, count):
            filters = {name: wanted[name] for name in names}
            kept = [e for e in events if all(e[column[name]] == value for name, value in filters.items())]
            expected = [str(e["id"]) for e in reversed(kept)]
            assert expected, filters
            rows, total = await audit_service.list_events(data, limit=100, offset=0, **filters)
            assert ([str(row.id) for row in rows], total) == (expected, len(expected)), filters
            paged: list[str] = []
            for offset in range(0, len(events) + 5, 5):
                rows, total = await audit_service.list_events(data, limit=5, offset=offset, **filters)
                assert total == len(expected), (filters, offset)
                paged += [str(row.id) for row in rows]
            assert paged == expected, filters
    rows, total = await audit_service.list_events(data, limit=5, offset=0, actor_id=actor, action="nothing")
    assert (rows, total) == ([], 0)
    [first] = (await audit_service.list_events(data, limit=1, offset=0, actor_id=actor, org_id=org))[0]
    assert (first.action, first.details, first.created_at) == ("x.one", {"n": 6}, events[6]["created_at"])


# --- each shape built once ------------------------------------------------------------------------------


@pytest.fixture
def fresh_shapes() -> Iterator[None]:
    """No shape built yet, and none left built by a counting Query afterwards."""
    shapes = (admin_service._user_list, admin_service._user_search, audit_service._events)
    for shape in shapes:
        shape.cache_clear()
    yield
    for shape in shapes:
        shape.cache_clear()


def counting(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """The statements of every ``Query`` ``module`` builds from now on."""
    built: list[Any] = []

    class CountingQuery(Query[Any]):
        def __init__(self, statement: Any, row: Any) -> None:
            built.append(statement)
            super().__init__(statement, row)

    monkeypatch.setattr(module, "Query", CountingQuery)
    return built


@pytest.mark.usefixtures("fresh_shapes")
async def test_a_user_list_shape_is_built_once(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    built = counting(monkeypatch, admin_service)
    data, sample = state_of(app).data, FixedSample([])
    await admin_service.list_users(data, limit=10, offset=0, is_active=True)
    await admin_service.list_users(data, limit=5, offset=3, is_active=False)  # the same shape, other values
    assert len(built) == 2  # its count and its page
    await admin_service.list_users(data, limit=10, offset=0, is_active=True, is_superuser=False)
    assert len(built) == 4
    await admin_service.list_users(data, limit=10, offset=0, search="quokka", sample=sample)
    await admin_service.list_users(data, limit=10, offset=0, search="wombat", sample=sample)  # 2 pieces too
    assert len(built) == 6
    await admin_service.list_users(data, limit=10, offset=0, search="wombats", sample=sample)  # 3 pieces
    assert len(built) == 8


@pytest.mark.usefixtures("fresh_shapes")
async def test_an_audit_list_shape_is_built_once(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    built = counting(monkeypatch, audit_service)
    data = state_of(app).data
    await audit_service.list_events(data, limit=10, offset=0, action="a")
    await audit_service.list_events(data, limit=3, offset=1, action="b")
    assert len(built) == 2
    await audit_service.list_events(data, limit=10, offset=0, action="a", actor_id=uuid.uuid4())
    await audit_service.list_events(data, limit=10, offset=0)
    assert len(built) == 6


@requires_postgres()
@pytest.mark.usefixtures("fresh_shapes")
async def test_a_shape_is_compiled_once(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[Any] = []

    def counting_compile(dialect: Any, statement: Any) -> Any:
        compiled.append(statement)
        return DriverStatement(dialect, statement)

    monkeypatch.setattr("app.core.data.DriverStatement", counting_compile)
    data, sample = state_of(app).data, FixedSample([])
    for search in ("quokka", "wombat"):
        await admin_service.list_users(data, limit=10, offset=0, search=search, is_active=True, sample=sample)
    for action in ("a", "b"):
        await audit_service.list_events(data, limit=10, offset=0, action=action)
    # the search's page (its count runs only past the last page), the events' count and page
    assert len(compiled) == 3, compiled
