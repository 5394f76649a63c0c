from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.core.data import TxDep
from app.core.errors import unexpected_error_response
from app.state import state_of
from app.users.models import User
from app.users.service import create_user
from tests.conftest import AppFactory, client_for
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.asyncio

LOGIN = "/api/v1/auth/login"


class TestBadInput:
    async def test_malformed_json_422_with_code(self, client: httpx.AsyncClient) -> None:
        response = await client.post(LOGIN, content=b'{"email": ', headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_json"
        assert isinstance(response.json()["detail"], list)  # FastAPI's validation shape is kept

    async def test_invalid_utf8_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(LOGIN, content=b"\xff\xfe{}", headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_json"

    async def test_wrong_content_type_415(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            LOGIN, content=b'{"email":"a@b.co","password":"x"}', headers={"content-type": "text/plain"}
        )
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"

    async def test_oversized_body_413(self, make_app: AppFactory) -> None:
        app = await make_app(MAX_BODY_SIZE=4096)
        async with client_for(app) as client:
            response = await client.post(
                LOGIN, content=b'{"email":"' + b"a" * 10_000 + b'"}', headers={"content-type": "application/json"}
            )
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"
            assert "x-request-id" in response.headers

    async def test_oversized_chunked_body_413(self, make_app: AppFactory) -> None:
        app = await make_app(MAX_BODY_SIZE=4096)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"a" * 1000

        async with client_for(app) as client:
            response = await client.post(LOGIN, content=chunks(), headers={"content-type": "application/json"})
            assert response.status_code == 413
            assert response.json()["code"] == "payload_too_large"

    async def test_validation_error_never_echoes_password(self, client: httpx.AsyncClient) -> None:
        secret = "my-secret-password-value"
        response = await client.post(LOGIN, json={"email": "not-an-email", "password": secret})
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert secret not in response.text

    async def test_unknown_route_404_and_wrong_method_405(self, client: httpx.AsyncClient) -> None:
        missing = await client.get("/api/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found", "code": "not_found"}
        wrong = await client.delete("/health")
        assert wrong.status_code == 405
        assert wrong.json()["code"] == "method_not_allowed"


class TestRequestId:
    async def test_generated(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/live")
        assert len(response.headers["x-request-id"]) >= 16

    async def test_sane_incoming_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/live", headers={"X-Request-ID": "abc-123.def"})
        assert response.headers["x-request-id"] == "abc-123.def"

    async def test_insane_incoming_replaced(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/live", headers={"X-Request-ID": "bad id <script>" + "x" * 300})
        assert response.headers["x-request-id"] != "bad id <script>" + "x" * 300
        assert "<" not in response.headers["x-request-id"]


class TestUnexpectedError:
    async def test_500_is_clean_logged_and_has_headers(
        self, make_app: AppFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        app: FastAPI = await make_app()

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("secret internals: password=hunter2")

        async with client_for(app) as client:
            with caplog.at_level(logging.ERROR, logger="app"):
                response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
        assert "hunter2" not in response.text
        assert response.headers["x-request-id"] == "req-500"
        assert response.headers["x-content-type-options"] == "nosniff"
        logged = [r for r in caplog.records if "req-500" in r.getMessage()]
        assert logged and logged[0].exc_info is not None


class TestRollback:
    async def test_failed_request_leaves_nothing_half_written(self, make_app: AppFactory) -> None:
        """A request that fails after writing rolls back all of it."""
        app: FastAPI = await make_app()

        @app.post("/half")
        async def half(tx: TxDep) -> None:
            await create_user(tx, email="half@example.com", hashed_password=None)
            raise RuntimeError("fails after the insert")

        async with client_for(app) as client:
            response = await client.post("/half")
        assert response.status_code == 500
        async with state_of(app).sessionmaker() as session:
            count = await session.scalar(select(func.count()).select_from(User).where(User.email == "half@example.com"))
        assert count == 0

    async def test_register_duplicate_keeps_first(self, client: httpx.AsyncClient) -> None:
        body = {"email": "dup@example.com", "password": DEFAULT_PASSWORD}
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
        assert (await client.post("/api/v1/auth/register", json=body)).status_code == 409
        login = await client.post(LOGIN, json=body)
        assert login.status_code == 200


class _DriverError(Exception):
    """What asyncpg raises for a constraint violation: the constraint's name and the SQLSTATE."""

    def __init__(self, constraint_name: str, sqlstate: str) -> None:
        super().__init__(constraint_name)
        self.constraint_name = constraint_name
        self.sqlstate = sqlstate


def _integrity_error(constraint: str, sqlstate: str = "23503") -> IntegrityError:
    adapted = Exception("adapted by the dialect")
    adapted.__cause__ = _DriverError(constraint, sqlstate)
    return IntegrityError("INSERT INTO memberships ...", {}, adapted)


class TestVanishedUser:
    """A row referencing ``users`` whose user was deleted while the request ran (app/users/lifecycle.py): 401,
    not 500 (tests/users/test_lifecycle.py shows it end to end); every other violation stays a 500."""

    async def test_user_foreign_key_is_401(self) -> None:
        response = unexpected_error_response(_integrity_error("fk_memberships_user_id_users"), "req")
        assert response.status_code == 401
        assert json.loads(bytes(response.body))["code"] == "session_revoked"
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize(
        ("constraint", "sqlstate"),
        [("fk_memberships_org_id_organizations", "23503"), ("uq_users_email", "23505")],
    )
    async def test_any_other_violation_is_500(self, constraint: str, sqlstate: str) -> None:
        response = unexpected_error_response(_integrity_error(constraint, sqlstate), "req")
        assert response.status_code == 500
