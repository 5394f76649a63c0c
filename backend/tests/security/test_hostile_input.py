"""Hostile input: every answer is a clean 4xx (or the normal answer), never a 500, and nothing leaks or changes.

The operations come from the app's own OpenAPI document, so a new route is covered without editing this file.
Requests are made by a superuser who owns an organization (with a member and a pending invitation), so that
authorization passes and the hostile part of the request is what the app has to deal with.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import func, select

from app.core import security
from app.credits.schemas import MAX_AMOUNT
from app.orgs.models import OrgRole
from app.state import state_of
from app.users.models import User
from tests import factories
from tests.conftest import TEST_SECRET_KEY
from tests.core.uvicorn_server import uvicorn_server
from tests.factories import create_user
from tests.orgs.helpers import add_membership, make_api_key, make_invitation, make_org

API = "/api/v1"
SQL_INJECTIONS = [
    "' OR 1=1--",
    "' OR '1'='1",
    '" OR ""="',
    "1; DROP TABLE users;--",
    "'; DELETE FROM users WHERE ''='",
    "%' OR email LIKE '%",
    "' UNION SELECT hashed_password FROM users--",
    "\\'; SELECT pg_sleep(5)--",
    "%_%",
    "\x00' OR 1=1",
]


@dataclass
class World:
    superuser: factories.TestUser
    member: factories.TestUser
    org_id: uuid.UUID
    invitation_id: uuid.UUID
    api_key_id: uuid.UUID

    @property
    def path_ids(self) -> dict[str, str]:
        assert self.superuser.session_id is not None
        return {
            "org_id": str(self.org_id),
            "user_id": str(self.member.id),
            "invitation_id": str(self.invitation_id),
            "session_id": str(self.superuser.session_id),
            "key_id": str(self.api_key_id),
        }


@pytest_asyncio.fixture
async def world(app: FastAPI) -> World:
    superuser = await create_user(app, is_superuser=True, full_name="Root Admin")
    member = await create_user(app, full_name="Mia Member")
    org_id = await make_org(app, superuser, name="Hostile Org")
    await add_membership(app, org_id, member.id, OrgRole.MEMBER)
    invitation_id, _ = await make_invitation(app, org_id, superuser.id, email="invitee@example.com")
    api_key_id, _ = await make_api_key(app, org_id, superuser.id)
    return World(superuser=superuser, member=member, org_id=org_id, invitation_id=invitation_id, api_key_id=api_key_id)


def _operations(app: FastAPI) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], path)


async def _user_count(app: FastAPI) -> int:
    async with state_of(app).sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


def assert_clean_error(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert "detail" in body and isinstance(body["code"], str)


@pytest.mark.asyncio
class TestSqlInjection:
    async def test_every_query_parameter(self, client: httpx.AsyncClient, app: FastAPI, world: World) -> None:
        users_before = await _user_count(app)
        tried = 0
        for method, path, operation in _operations(app):
            if method != "GET":
                continue
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            for name in names:
                for payload in SQL_INJECTIONS:
                    response = await client.get(
                        _fill(path, world.path_ids), params={name: payload}, headers=world.superuser.headers
                    )
                    tried += 1
                    assert response.status_code in (200, 422), (path, name, payload, response.text)
                    if response.status_code == 200 and "items" in response.json():
                        assert response.json()["items"] == [], (path, name, payload)
        assert tried >= 20  # admin search and filters, paging everywhere
        assert await _user_count(app) == users_before

    async def test_admin_search_matches_literally(self, client: httpx.AsyncClient, world: World) -> None:
        everyone = await client.get(f"{API}/admin/users", headers=world.superuser.headers)
        assert everyone.json()["total"] == 2
        for payload in ("' OR 1=1--", "%", "_", "%' OR email LIKE '%"):
            response = await client.get(
                f"{API}/admin/users", params={"search": payload}, headers=world.superuser.headers
            )
            assert response.status_code == 200
            assert response.json()["total"] == 0, payload  # wildcards and quotes are text, not SQL
        by_name = await client.get(f"{API}/admin/users", params={"search": "mia"}, headers=world.superuser.headers)
        assert [item["email"] for item in by_name.json()["items"]] == [world.member.email]

    async def test_every_path_parameter(self, client: httpx.AsyncClient, app: FastAPI, world: World) -> None:
        users_before = await _user_count(app)
        tried = 0
        for method, path, _ in _operations(app):
            for name in re.findall(r"\{(\w+)\}", path):
                for payload in SQL_INJECTIONS:
                    values = {**world.path_ids, name: quote(payload, safe="")}
                    response = await client.request(
                        method,
                        _fill(path, values),
                        headers=world.superuser.headers,
                        json={} if method != "GET" else None,
                    )
                    tried += 1
                    assert response.status_code == 422, (method, path, payload, response.text)
                    assert "code" in response.json()
        assert tried >= 100
        assert await _user_count(app) == users_before

    async def test_login_email(self, client: httpx.AsyncClient, world: World) -> None:
        for payload in SQL_INJECTIONS:
            response = await client.post(f"{API}/auth/login", json={"email": payload, "password": "' OR 1=1--"})
            assert response.status_code in (401, 422), response.text
        sneaky = f"{world.superuser.email}'--"
        response = await client.post(f"{API}/auth/login", json={"email": sneaky, "password": "x" * 8})
        assert response.status_code in (401, 422)


@pytest.mark.asyncio
class TestMalformedBodies:
    async def test_deeply_nested_json_422(self, client: httpx.AsyncClient) -> None:
        depth = 10_000
        for body in (b"[" * depth + b"]" * depth, b'{"email":' + b"[" * depth + b"]" * depth + b"}"):
            response = await client.post(
                f"{API}/auth/login", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert response.json()["code"] in ("invalid_json", "validation_error")

    async def test_deeply_nested_object_field_422(self, client: httpx.AsyncClient, world: World) -> None:
        depth = 10_000
        nested = '{"a":' * depth + "1" + "}" * depth
        body = f'{{"full_name": {nested}}}'.encode()
        response = await client.patch(
            f"{API}/users/me", content=body, headers={**world.superuser.headers, "content-type": "application/json"}
        )
        assert response.status_code == 422, response.text

    @pytest.mark.parametrize(
        "body", [b"\xff\xfe\x00{", b'{"email": "\xc3\x28@example.com"}', b"\x80/\x1d", b"\xed\xa0\x80"]
    )
    async def test_invalid_utf8_422(self, client: httpx.AsyncClient, body: bytes) -> None:
        response = await client.post(f"{API}/auth/login", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_json"

    async def test_invalid_utf8_in_query_and_path(self, client: httpx.AsyncClient, world: World) -> None:
        search = await client.get(f"{API}/admin/users?search=%C3%28%FF", headers=world.superuser.headers)
        assert search.status_code in (200, 422)
        path = await client.get(f"{API}/organizations/%C3%28%FF", headers=world.superuser.headers)
        assert path.status_code == 422

    @pytest.mark.parametrize(
        "method, path, body",
        [
            ("PATCH", "/users/me", {"full_name": "nul\x00byte"}),
            ("POST", "/organizations", {"name": "Nul\x00Org"}),
            ("POST", "/credits/spend", {"amount": 1, "reason": "\x00"}),
            ("POST", "/auth/login", {"email": "a\x00@example.com", "password": "pass\x00word"}),
        ],
    )
    async def test_nul_characters_422(
        self, client: httpx.AsyncClient, world: World, method: str, path: str, body: dict[str, Any]
    ) -> None:
        response = await client.request(method, f"{API}{path}", json=body, headers=world.superuser.headers)
        assert response.status_code == 422, response.text

    async def test_oversized_body_413(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        size = state_of(app).settings.MAX_BODY_SIZE + 1
        body = b'{"email":"' + b"a" * size + b'"}'
        response = await client.post(f"{API}/auth/register", content=body, headers={"content-type": "application/json"})
        assert_clean_error(response, 413)

    async def test_huge_string_fields_422(self, client: httpx.AsyncClient, world: World) -> None:
        big = "x" * 500_000
        response = await client.patch(f"{API}/users/me", json={"full_name": big}, headers=world.superuser.headers)
        assert response.status_code == 422
        response = await client.post(f"{API}/auth/login", json={"email": f"{big}@example.com", "password": big})
        assert response.status_code == 422


@pytest.mark.asyncio
class TestHeaders:
    async def test_enormous_authorization_header_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get(f"{API}/users/me", headers={"Authorization": "Bearer " + "A" * 200_000})
        assert_clean_error(response, 401)

    async def test_enormous_unrelated_header_is_harmless(self, client: httpx.AsyncClient, world: World) -> None:
        headers = {**world.superuser.headers, "X-Junk": "j" * 200_000, "X-Request-ID": "r" * 10_000}
        response = await client.get(f"{API}/users/me", headers=headers)
        assert response.status_code == 200
        assert response.headers["x-request-id"] != "r" * 10_000  # an insane request id is replaced

    async def test_thousand_headers(self, client: httpx.AsyncClient, world: World) -> None:
        headers = [(f"x-filler-{i}", str(i)) for i in range(1000)]
        headers += [("x-forwarded-for", "10.0.0.1")] * 50
        headers.append(("authorization", world.superuser.headers["Authorization"]))
        response = await client.get(f"{API}/users/me", headers=headers)
        assert response.status_code == 200


@pytest.fixture(scope="module")
def live_server(database_url: str) -> Iterator[str]:
    """A real uvicorn (httptools) in front of the app: the HTTP parser's limits apply."""
    with uvicorn_server(database_url) as base_url:
        yield base_url


def _raw_request(base_url: str, head: bytes) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


class TestHeadersOverTheWire:
    def test_enormous_header_refused_server_keeps_serving(self, live_server: str) -> None:
        head = (
            b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nX-Junk: "
            + b"j" * 1_000_000
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = _raw_request(live_server, head)
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
        assert httpx.get(f"{live_server}/health/live", timeout=10).status_code == 200

    def test_thousand_headers_server_keeps_serving(self, live_server: str) -> None:
        lines = b"".join(b"X-Filler-%d: %d\r\n" % (i, i) for i in range(1000))
        head = b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\n" + lines + b"Connection: close\r\n\r\n"
        answer = _raw_request(live_server, head)
        assert answer.startswith(b"HTTP/1.1 401") or answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert httpx.get(f"{live_server}/health/live", timeout=10).status_code == 200

    def test_invalid_utf8_in_header_values(self, live_server: str) -> None:
        head = b"GET /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3\x28\r\n"
        head += b"Connection: close\r\n\r\n"
        answer = _raw_request(live_server, head)
        assert answer.startswith(b"HTTP/1.1 401") or answer.startswith(b"HTTP/1.1 400"), answer[:200]


@pytest.mark.asyncio
class TestNumbers:
    @pytest.mark.parametrize("amount", [2**70, -(2**70), 2**63, MAX_AMOUNT + 1, 0, -1, 1.5, "10", True, None, 1e400])
    async def test_spend_amount_422(self, client: httpx.AsyncClient, app: FastAPI, world: World, amount: Any) -> None:
        body = json.dumps({"amount": amount, "reason": "hostile"}).replace("Infinity", "1e400").encode()
        response = await client.post(
            f"{API}/credits/spend",
            content=body,
            headers={**world.superuser.headers, "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        balance = await client.get(f"{API}/credits", headers=world.superuser.headers)
        assert balance.json()["balance"] == state_of(app).settings.DEFAULT_CREDITS

    @pytest.mark.parametrize("amount", [2**70, -(2**70), 0, MAX_AMOUNT + 1, -MAX_AMOUNT - 1, 2.5])
    async def test_admin_adjust_amount_422(
        self, client: httpx.AsyncClient, app: FastAPI, world: World, amount: Any
    ) -> None:
        response = await client.post(
            f"{API}/admin/users/{world.member.id}/credits",
            json={"amount": amount, "reason": "hostile"},
            headers=world.superuser.headers,
        )
        assert response.status_code == 422, response.text

    async def test_admin_adjust_below_zero_refused(self, client: httpx.AsyncClient, app: FastAPI, world: World) -> None:
        response = await client.post(
            f"{API}/admin/users/{world.member.id}/credits",
            json={"amount": -(state_of(app).settings.DEFAULT_CREDITS + 1), "reason": "too much"},
            headers=world.superuser.headers,
        )
        assert_clean_error(response, 402, 409)
        detail = await client.get(f"{API}/admin/users/{world.member.id}", headers=world.superuser.headers)
        assert detail.json()["balance"] == state_of(app).settings.DEFAULT_CREDITS

    @pytest.mark.parametrize(
        "params", [{"limit": 2**70}, {"offset": 2**70}, {"offset": -1}, {"limit": 0}, {"limit": "1e3"}]
    )
    async def test_paging_out_of_range_422(
        self, client: httpx.AsyncClient, world: World, params: dict[str, Any]
    ) -> None:
        for path in (
            "/admin/users",
            "/credits/transactions",
            "/organizations",
            f"/organizations/{world.org_id}/members",
        ):
            response = await client.get(f"{API}{path}", params=params, headers=world.superuser.headers)
            assert response.status_code == 422, (path, response.text)

    async def test_largest_offset_is_answered(self, client: httpx.AsyncClient, world: World) -> None:
        response = await client.get(
            f"{API}/admin/users", params={"offset": 10_000_000}, headers=world.superuser.headers
        )
        assert response.status_code == 200
        assert response.json()["items"] == []


@pytest.mark.asyncio
class TestUnknownFields:
    async def test_every_json_write_endpoint_refuses_unknown_fields(
        self, client: httpx.AsyncClient, app: FastAPI, world: World
    ) -> None:
        checked = []
        for method, path, operation in _operations(app):
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue  # the OAuth2 form of /auth/token follows the OAuth2 spec
            response = await client.request(
                method,
                _fill(path, world.path_ids),
                json={"sneaky_unknown_field": True},
                headers=world.superuser.headers,
            )
            assert response.status_code == 422, (method, path, response.text)
            errors = response.json()["detail"]
            assert {"type": "extra_forbidden", "loc": ["body", "sneaky_unknown_field"]} in [
                {"type": e["type"], "loc": e["loc"]} for e in errors
            ], (method, path, errors)
            checked.append(f"{method} {path}")
        assert len(checked) >= 20, checked

    @pytest.mark.parametrize(
        "method, path, body",
        [
            ("PUT", "/profile", {"full_name": "X", "credits": 10**9}),
            ("PATCH", "/users/me", {"full_name": "X", "is_superuser": True}),
            ("PATCH", "/users/me", {"full_name": "X", "is_verified": True}),
            (
                "POST",
                "/auth/register",
                {"email": "new@example.com", "password": "Very-long-pass-123", "is_superuser": True},
            ),
        ],
    )
    async def test_privileged_fields_never_applied(
        self, client: httpx.AsyncClient, world: World, method: str, path: str, body: dict[str, Any]
    ) -> None:
        response = await client.request(method, f"{API}{path}", json=body, headers=world.member.headers)
        assert response.status_code == 422
        me = await client.get(f"{API}/users/me", headers=world.member.headers)
        assert me.json()["is_superuser"] is False and me.json()["full_name"] == "Mia Member"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user: factories.TestUser, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user.id),
        "sid": str(user.session_id),
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "iss": "organizations-api",
        "aud": "organizations-api",
        "jti": "hostile",
        "type": "access",
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _forge(
    user: factories.TestUser, key: str = TEST_SECRET_KEY, headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    return jwt.encode(_claims(user, **claims), key, algorithm="HS256", headers=headers)


@pytest.mark.asyncio
class TestTokens:
    async def assert_401(self, client: httpx.AsyncClient, token: str) -> httpx.Response:
        response = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
        assert_clean_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        return response

    async def test_forged_token_with_the_right_key_is_accepted(self, client: httpx.AsyncClient, world: World) -> None:
        # The control for every forgery below: only the one thing each changes makes it fail.
        response = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {_forge(world.member)}"})
        assert response.status_code == 200

    async def test_truncated(self, client: httpx.AsyncClient, world: World) -> None:
        token = world.member.access_token
        for cut in (token[:-1], token[:-10], token[: token.rindex(".")], token[: token.index(".")], token[:5]):
            await self.assert_401(client, cut)

    async def test_wrong_signature(self, client: httpx.AsyncClient, world: World) -> None:
        head, body, signature = world.member.access_token.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        await self.assert_401(client, f"{head}.{body}.{flipped}")
        await self.assert_401(client, f"{head}.{body}.")

    async def test_tampered_payload(self, client: httpx.AsyncClient, world: World) -> None:
        head, _, signature = world.member.access_token.split(".")
        payload = _claims(world.member, sub=str(world.superuser.id), sid=str(world.superuser.session_id))
        body = _b64(
            json.dumps(
                {k: v if not isinstance(v, datetime) else int(v.timestamp()) for k, v in payload.items()}
            ).encode()
        )
        await self.assert_401(client, f"{head}.{body}.{signature}")

    @pytest.mark.parametrize("token_type", ["refresh", "ACCESS", "", None, "id"])
    async def test_wrong_type_claim(self, client: httpx.AsyncClient, world: World, token_type: str | None) -> None:
        await self.assert_401(client, _forge(world.member, type=token_type))

    @pytest.mark.parametrize("typ", ["refresh", "at+jwt", "JWE"])
    async def test_wrong_typ_header_changes_nothing_else(
        self, client: httpx.AsyncClient, world: World, typ: str
    ) -> None:
        # `typ` is not what makes a token ours (the signed `type` claim is): a refresh `typ` cannot turn a
        # refresh-type token into an access token, and a signed access token stays one whatever `typ` says.
        await self.assert_401(client, _forge(world.member, headers={"typ": typ}, type="refresh"))

    async def test_refresh_token_as_access_token(self, client: httpx.AsyncClient, world: World) -> None:
        response = await self.assert_401(client, world.member.refresh_token)
        assert response.json()["code"] == "invalid_token"

    async def test_access_token_as_refresh_token(self, client: httpx.AsyncClient, world: World) -> None:
        response = await client.post(f"{API}/auth/refresh", json={"refresh_token": world.member.access_token})
        assert_clean_error(response, 401)
        me = await client.get(f"{API}/users/me", headers=world.member.headers)
        assert me.status_code == 200  # the refused attempt did not end the session

    async def test_deleted_user(self, client: httpx.AsyncClient, world: World) -> None:
        deleted = await client.delete(f"{API}/admin/users/{world.member.id}", headers=world.superuser.headers)
        assert deleted.status_code == 204
        await self.assert_401(client, world.member.access_token)
        await self.assert_401(client, _forge(world.member))  # even re-signed with the right key
        refresh = await client.post(f"{API}/auth/refresh", json={"refresh_token": world.member.refresh_token})
        assert_clean_error(refresh, 401)

    async def test_secret_key_of_another_deployment(self, client: httpx.AsyncClient, world: World) -> None:
        await self.assert_401(client, _forge(world.member, key="another-deployment-secret-key-0123456789abcdef"))

    async def test_refresh_token_of_another_deployment(
        self, client: httpx.AsyncClient, app: FastAPI, world: World
    ) -> None:
        other = state_of(app).settings.model_copy(
            update={"SECRET_KEY": "another-deployment-secret-key-0123456789abcdef"}
        )
        parts = security.parse_refresh_token(world.member.refresh_token)
        assert parts is not None
        forged = security.derive_refresh_token(
            other, session_id=parts.session_id, generation=parts.generation, salt="x"
        )
        response = await client.post(f"{API}/auth/refresh", json={"refresh_token": forged})
        assert_clean_error(response, 401)

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    async def test_alg_none(self, client: httpx.AsyncClient, world: World, alg: str) -> None:
        payload = {
            k: v if not isinstance(v, datetime) else int(v.timestamp()) for k, v in _claims(world.member).items()
        }
        head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload).encode())
        await self.assert_401(client, f"{head}.{body}.")
        await self.assert_401(client, f"{head}.{body}.{_b64(b'x' * 32)}")

    @pytest.mark.parametrize("alg", ["HS384", "HS512"])
    async def test_other_hmac_algorithms(self, client: httpx.AsyncClient, world: World, alg: str) -> None:
        token = jwt.encode(
            _claims(world.member), TEST_SECRET_KEY + "-padding-for-longer-hmac-keys-0123456789", algorithm=alg
        )
        await self.assert_401(client, token)

    async def test_expired_and_not_yet_valid(self, client: httpx.AsyncClient, world: World) -> None:
        past = datetime.now(UTC) - timedelta(hours=1)
        expired = await self.assert_401(
            client, _forge(world.member, iat=past, nbf=past, exp=past + timedelta(minutes=1))
        )
        assert expired.json()["code"] == "token_expired"
        future = datetime.now(UTC) + timedelta(hours=1)
        await self.assert_401(client, _forge(world.member, nbf=future))

    @pytest.mark.parametrize("claim", ["exp", "sid", "sub", "aud", "iss", "jti"])
    async def test_missing_claim(self, client: httpx.AsyncClient, world: World, claim: str) -> None:
        await self.assert_401(client, _forge(world.member, TEST_SECRET_KEY, None, **{claim: None}))

    @pytest.mark.parametrize("field, value", [("sub", "not-a-uuid"), ("sid", "1 OR 1=1"), ("sub", 12), ("sid", ["x"])])
    async def test_malformed_claim(self, client: httpx.AsyncClient, world: World, field: str, value: Any) -> None:
        await self.assert_401(client, _forge(world.member, **{field: value}))

    async def test_session_of_another_user(self, client: httpx.AsyncClient, world: World) -> None:
        await self.assert_401(client, _forge(world.member, sid=str(world.superuser.session_id)))

    @pytest.mark.parametrize(
        "value", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer  x.y.z", "Token abc", "Bearer a b"]
    )
    async def test_malformed_authorization_header(self, client: httpx.AsyncClient, value: str) -> None:
        response = await client.get(f"{API}/users/me", headers={"Authorization": value})
        assert_clean_error(response, 401)
