"""Schemathesis over the app's own OpenAPI document: every operation, as a normal user, an org admin and a
superuser. No answer is a 500, every answer conforms to its documented status codes, media type and schema,
and every error body carries ``detail`` and ``code``.

The document is the one the app serves at /api/v1/openapi.json. Requests go in-process (ASGI) to a second app
instance on the test database. ``FUZZ_EXAMPLES`` sets the examples per operation (``make fuzz`` runs 200).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.core.settings import Settings
from app.main import create_app
from app.orgs.models import OrgRole
from tests import factories
from tests.conftest import DB_KIND, TEST_SECRET_KEY, make_settings
from tests.factories import create_user
from tests.orgs.helpers import add_membership, make_invitation, make_org

pytestmark = pytest.mark.fuzz

# A bounded run in CI (the PostgreSQL pass gets more than the SQLite one); `make fuzz` sets FUZZ_EXAMPLES=200.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or (20 if DB_KIND == "postgres" else 5))
# CI is reproducible (derandomized); a longer run explores new inputs every time.
DERANDOMIZE = "FUZZ_EXAMPLES" not in os.environ


def _document() -> dict[str, Any]:
    """The document /api/v1/openapi.json serves (it does not depend on the database)."""
    app = create_app(Settings(_env_file=None, ENVIRONMENT="test", SECRET_KEY=TEST_SECRET_KEY))
    document: dict[str, Any] = app.openapi()
    return document


# Unknown query parameters are ignored (as by any FastAPI service); unknown body fields are refused.
CONFIG = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})
schema: BaseSchema = schemathesis.openapi.from_dict(_document(), config=CONFIG)
if only := os.environ.get("FUZZ_ONLY"):  # e.g. FUZZ_ONLY=/credits to fuzz a few operations for longer
    schema = schema.include(path_regex=only)

# Business rules JSON Schema cannot state (a common password, an amount of 0) answer 422 to schema-valid data.
EXCLUDED: list[CheckFunction] = [positive_data_acceptance]


def error_body_has_detail_and_code(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and "detail" in body and isinstance(body.get("code"), str), response.text


ROLES = ("user", "org_admin", "superuser")


@pytest.fixture(scope="session")
def fuzz_app(base_settings: dict[str, Any]) -> Iterator[FastAPI]:
    """An app instance whose lifespan runs on schemathesis' own event loop (its ASGI client starts it)."""
    application = create_app(make_settings(base_settings))
    yield application
    asgi.shutdown_lifespans()


@dataclass
class Actors:
    users: dict[str, factories.TestUser]
    org_id: uuid.UUID
    invitation_id: uuid.UUID

    def path_ids(self, role: str) -> dict[str, uuid.UUID]:
        """Ids that exist, so that generated requests also reach the code behind the 404s."""
        return {
            "org_id": self.org_id,
            "user_id": self.users["user"].id,
            "invitation_id": self.invitation_id,
            "session_id": self.users[role].session_id or uuid.uuid4(),
        }


@pytest_asyncio.fixture
async def actors(app: FastAPI) -> AsyncIterator[Actors]:
    superuser = await create_user(app, is_superuser=True)
    org_admin = await create_user(app)
    user = await create_user(app)
    org_id = await make_org(app, superuser, name="Fuzz Org")  # the superuser owns it
    await add_membership(app, org_id, org_admin.id, OrgRole.ADMIN)
    await add_membership(app, org_id, user.id, OrgRole.MEMBER)
    invitation_id, _ = await make_invitation(app, org_id, org_admin.id, email="invited@example.com")
    yield Actors(
        users={"user": user, "org_admin": org_admin, "superuser": superuser}, org_id=org_id, invitation_id=invitation_id
    )


def _operations() -> list[schemathesis.APIOperation[Any, Any, Any, Any]]:
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()  # an operation schemathesis cannot read fails the module, it is not skipped
        operations.append(result.ok())
    return operations


OPERATIONS = _operations()
NEGATIVE = schemathesis.GenerationMode.NEGATIVE


def _cases(operation: schemathesis.APIOperation[Any, Any, Any, Any]) -> st.SearchStrategy[schemathesis.Case[Any]]:
    """Valid requests, and requests that break the schema (wrong types, missing or unknown fields, bad ids)."""
    positive = operation.as_strategy()
    has_input = bool(operation.path_parameters or operation.query or operation.body)
    return st.one_of(positive, operation.as_strategy(NEGATIVE)) if has_input else positive


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_operation(operation: schemathesis.APIOperation[Any, Any, Any, Any], fuzz_app: FastAPI, actors: Actors) -> None:
    @given(case=_cases(operation), data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def fuzz(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        generated = dict(case.path_parameters or {})
        for role in ROLES:
            case.path_parameters = dict(generated)
            if _all_uuids(generated) and data.draw(st.booleans(), label="existing ids"):
                ids = actors.path_ids(role)
                case.path_parameters = {name: str(ids.get(name, value)) for name, value in generated.items()}
            headers = actors.users[role].headers
            response = case.call(app=fuzz_app, headers=headers)
            case.validate_response(
                response,
                headers=headers,
                excluded_checks=EXCLUDED,
                additional_checks=[error_body_has_detail_and_code],
                transport_kwargs={"app": fuzz_app, "headers": headers},
            )

    fuzz()


def _all_uuids(values: dict[str, Any]) -> bool:
    """Valid ids only: a generated invalid one (negative case) must reach the app unchanged."""
    try:
        return all(uuid.UUID(str(value)) for value in values.values())
    except ValueError:
        return False


@pytest.mark.asyncio
async def test_fuzzed_document_is_the_served_one(client: httpx.AsyncClient) -> None:
    served = await client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == _document()
    assert len(OPERATIONS) == sum(len(item) for item in served.json()["paths"].values())
