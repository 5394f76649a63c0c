from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import httpx
import jwt
import pytest
import redis

from app.core.rate_limit import MemoryCounters
from app.state import state_of
from tests.conftest import AppFactory, client_for
from tests.core.uvicorn_server import free_port, uvicorn_server
from tests.factories import DEFAULT_PASSWORD, create_user, unique_email
from tests.proxy import TcpProxy

pytestmark = pytest.mark.asyncio

API = "/api/v1"


async def limited_app(make_app: AppFactory, **overrides: Any) -> Any:
    return await make_app(RATE_LIMIT_ENABLED=True, **overrides)


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert isinstance(response.json()["detail"], str)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"


async def post_login(client: httpx.AsyncClient, email: str, password: str = "wrong-password-1") -> httpx.Response:
    return await client.post(f"{API}/auth/login", json={"email": email, "password": password})


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared test Redis; its keys are deleted afterwards."""
    prefix = f"test-rl-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class TestLogin:
    async def test_per_ip_limit_429(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="3/minute", RATE_LIMIT_LOGIN_EMAIL="100/minute")
        async with client_for(app) as client:
            statuses = [(await post_login(client, unique_email())).status_code for _ in range(3)]
            assert statuses == [401, 401, 401]
            assert_rate_limited(await post_login(client, unique_email()))
        async with client_for(app, client_addr=("192.0.2.7", 1000)) as other:
            assert (await post_login(other, unique_email())).status_code == 401

    async def test_per_email_limit_across_ips(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="100/minute", RATE_LIMIT_LOGIN_EMAIL="2/minute")
        email = unique_email()
        variants = [email, f"  {email.upper()} ", email.capitalize()]
        responses = []
        for index, variant in enumerate(variants):
            async with client_for(app, client_addr=(f"198.51.100.{index + 1}", 1000)) as client:
                responses.append(await post_login(client, variant))
        assert [r.status_code for r in responses[:2]] == [401, 401]
        assert_rate_limited(responses[2])
        async with client_for(app, client_addr=("198.51.100.9", 1000)) as client:
            assert (await post_login(client, unique_email())).status_code == 401

    async def test_token_form_shares_the_login_buckets(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="100/minute", RATE_LIMIT_LOGIN_EMAIL="2/minute")
        email = unique_email()
        async with client_for(app) as client:
            assert (await post_login(client, email)).status_code == 401
            form = {"grant_type": "password", "username": email.upper(), "password": "wrong-password-1"}
            assert (await client.post(f"{API}/auth/token", data=form)).status_code == 400  # invalid_grant
            multipart = {
                "grant_type": (None, "password"),
                "username": (None, email),
                "password": (None, "wrong-password-1"),
            }
            assert_rate_limited(await client.post(f"{API}/auth/token", files=multipart))

    async def test_blocked_ip_creates_no_email_counters(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="2/minute", RATE_LIMIT_LOGIN_EMAIL="100/minute")
        async with client_for(app) as client:
            for _ in range(2):
                assert (await post_login(client, unique_email())).status_code == 401
            counters = len(cast(MemoryCounters, state_of(app).rate_limiter.storage()))
            for _ in range(5):
                assert_rate_limited(await post_login(client, unique_email()))
        assert len(cast(MemoryCounters, state_of(app).rate_limiter.storage())) == counters

    async def test_body_reaches_the_endpoint_with_headers(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="5/minute", RATE_LIMIT_LOGIN_EMAIL="4/minute")
        user = await create_user(app, logged_in=False)
        async with client_for(app) as client:
            response = await post_login(client, user.email, DEFAULT_PASSWORD)
            assert response.status_code == 200, response.text
            assert response.json()["access_token"]
            assert response.headers["X-RateLimit-Limit"] == "4"  # the tightest of the two limits
            assert response.headers["X-RateLimit-Remaining"] == "3"

    async def test_invalid_body_counts_per_ip_only(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="2/minute", RATE_LIMIT_LOGIN_EMAIL="1/minute")
        async with client_for(app) as client:
            first = await client.post(
                f"{API}/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
            )
            assert first.status_code == 422
            assert first.headers["X-RateLimit-Limit"] == "2"
            assert (await client.post(f"{API}/auth/login", json=[1, 2])).status_code == 422
            assert_rate_limited(await client.post(f"{API}/auth/login", json={"password": "x"}))


SENSITIVE = [
    ("/auth/register", "RATE_LIMIT_REGISTER"),
    ("/auth/refresh", "RATE_LIMIT_REFRESH"),
    ("/auth/password", "RATE_LIMIT_PASSWORD"),
    ("/auth/password-reset/request", "RATE_LIMIT_EMAIL"),
    ("/auth/password-reset/confirm", "RATE_LIMIT_PASSWORD"),
    ("/auth/verify-email/request", "RATE_LIMIT_EMAIL"),
    ("/auth/verify-email/confirm", "RATE_LIMIT_EMAIL"),
]


class TestSensitiveEndpoints:
    @pytest.mark.parametrize(("path", "setting"), SENSITIVE, ids=[path for path, _ in SENSITIVE])
    async def test_per_ip_limit_429(self, make_app: AppFactory, path: str, setting: str) -> None:
        app = await limited_app(make_app, **{setting: "2/minute", "RATE_LIMIT_DEFAULT": "100/minute"})
        async with client_for(app) as client:
            for _ in range(2):
                response = await client.post(f"{API}{path}", json={})
                assert response.status_code != 429
                assert response.headers["X-RateLimit-Limit"] == "2"
            assert_rate_limited(await client.post(f"{API}{path}", json={}))
        async with client_for(app, client_addr=("192.0.2.8", 1000)) as other:
            assert (await other.post(f"{API}{path}", json={})).status_code != 429

    async def test_password_reset_per_email_across_ips(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_EMAIL="2/minute")
        email = unique_email()
        statuses = []
        for index in range(3):
            async with client_for(app, client_addr=(f"203.0.113.{index + 1}", 1000)) as client:
                response = await client.post(f"{API}/auth/password-reset/request", json={"email": email})
                statuses.append(response.status_code)
        assert statuses == [202, 202, 429]

    async def test_register_does_not_use_the_login_bucket(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_LOGIN="1/minute", RATE_LIMIT_REGISTER="5/minute")
        async with client_for(app) as client:
            assert (await post_login(client, unique_email())).status_code == 401
            assert_rate_limited(await post_login(client, unique_email()))
            body = {"email": unique_email(), "password": DEFAULT_PASSWORD}
            assert (await client.post(f"{API}/auth/register", json=body)).status_code == 201


class TestDefaultLimit:
    async def test_per_user(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="3/minute")
        alice, bob = await create_user(app), await create_user(app)
        async with client_for(app) as client:
            remaining = []
            for _ in range(3):
                response = await client.get(f"{API}/users/me", headers=alice.headers)
                assert response.status_code == 200
                remaining.append(response.headers["X-RateLimit-Remaining"])
            assert remaining == ["2", "1", "0"]
            assert_rate_limited(await client.get(f"{API}/users/me", headers=alice.headers))
            assert (await client.get(f"{API}/users/me", headers=bob.headers)).status_code == 200  # same IP
            assert (await client.get(f"{API}/users/me")).status_code == 401  # anonymous: the IP's own bucket

    async def test_anonymous_per_ip(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="2/minute")
        async with client_for(app) as client:
            assert [(await client.get(f"{API}/users/me")).status_code for _ in range(2)] == [401, 401]
            assert_rate_limited(await client.get(f"{API}/no-such-route"))
        async with client_for(app, client_addr=("192.0.2.9", 1000)) as other:
            assert (await other.get(f"{API}/users/me")).status_code == 401

    async def test_forged_token_cannot_spend_a_users_quota(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="2/minute")
        victim = await create_user(app)
        claims = jwt.decode(victim.access_token, options={"verify_signature": False})
        forged = jwt.encode(claims, "an-attacker-key-that-is-long-enough-000", algorithm="HS256")
        async with client_for(app, client_addr=("192.0.2.66", 1000)) as attacker:
            for _ in range(2):
                response = await attacker.get(f"{API}/users/me", headers={"Authorization": f"Bearer {forged}"})
                assert response.status_code == 401
            assert_rate_limited(await attacker.get(f"{API}/users/me", headers={"Authorization": f"Bearer {forged}"}))
        async with client_for(app) as client:
            assert (await client.get(f"{API}/users/me", headers=victim.headers)).status_code == 200

    @pytest.mark.parametrize("path", ["/health/live", "/health", "/docs", "/redoc", "/docs/init.js"])
    async def test_outside_the_api_not_limited(self, make_app: AppFactory, path: str) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="1/minute")
        async with client_for(app) as client:
            for _ in range(3):
                response = await client.get(path)
                assert response.status_code == 200
                assert "X-RateLimit-Limit" not in response.headers

    async def test_window_ends(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="1/second")
        async with client_for(app) as client:
            assert (await client.get(f"{API}/users/me")).status_code == 401
            blocked = await client.get(f"{API}/users/me")
            assert blocked.status_code == 429
            assert blocked.headers["Retry-After"] == "1"
            await asyncio.sleep(1.1)
            assert (await client.get(f"{API}/users/me")).status_code == 401

    async def test_disabled(self, make_app: AppFactory) -> None:
        app = await make_app(RATE_LIMIT_ENABLED=False, RATE_LIMIT_DEFAULT="1/minute", RATE_LIMIT_LOGIN="1/minute")
        async with client_for(app) as client:
            for _ in range(3):
                response = await client.get(f"{API}/users/me")
                assert response.status_code == 401
                assert "X-RateLimit-Limit" not in response.headers
                assert (await post_login(client, unique_email())).status_code == 401

    async def test_429_keeps_security_and_cors_headers(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="1/minute", BACKEND_CORS_ORIGINS=["https://app.example"])
        async with client_for(app) as client:
            headers = {"Origin": "https://app.example"}
            await client.get(f"{API}/users/me", headers=headers)
            response = await client.get(f"{API}/users/me", headers=headers)
            assert_rate_limited(response)
            assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "Content-Security-Policy" in response.headers


class TestClientAddress:
    async def test_spoofed_forwarded_for_is_ignored(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="2/minute", TRUSTED_PROXIES=[])
        async with client_for(app, client_addr=("10.0.0.5", 1234)) as client:
            for index in range(2):
                forwarded = {"X-Forwarded-For": f"203.0.113.{index}"}
                assert (await client.get(f"{API}/users/me", headers=forwarded)).status_code == 401
            assert_rate_limited(await client.get(f"{API}/users/me", headers={"X-Forwarded-For": "203.0.113.50"}))

    async def test_trusted_proxy_forwarded_for_is_the_client(self, make_app: AppFactory) -> None:
        app = await limited_app(make_app, RATE_LIMIT_DEFAULT="2/minute", TRUSTED_PROXIES=["10.0.0.0/8"])
        async with client_for(app, client_addr=("10.0.0.5", 1234)) as proxy:
            # The client wrote "1.1.1.1"; our proxy appended the address it really saw.
            real = {"X-Forwarded-For": "1.1.1.1, 203.0.113.10"}
            for _ in range(2):
                assert (await proxy.get(f"{API}/users/me", headers=real)).status_code == 401
            assert_rate_limited(await proxy.get(f"{API}/users/me", headers={"X-Forwarded-For": "203.0.113.10"}))
            other = {"X-Forwarded-For": "1.1.1.1, 203.0.113.11"}
            assert (await proxy.get(f"{API}/users/me", headers=other)).status_code == 401

    async def test_session_records_the_real_client(self, make_app: AppFactory) -> None:
        app = await make_app(TRUSTED_PROXIES=["10.0.0.0/8"])
        user = await create_user(app, logged_in=False)
        body = {"email": user.email, "password": DEFAULT_PASSWORD}
        async with client_for(app, client_addr=("10.0.0.5", 1234)) as proxy:
            behind = await proxy.post(f"{API}/auth/login", json=body, headers={"X-Forwarded-For": "203.0.113.20"})
        async with client_for(app, client_addr=("192.0.2.30", 1234)) as direct:
            spoofed = await direct.post(f"{API}/auth/login", json=body, headers={"X-Forwarded-For": "203.0.113.21"})
            token = spoofed.json()["access_token"]
            sessions = await direct.get(f"{API}/auth/sessions", headers={"Authorization": f"Bearer {token}"})
        by_id = {row["id"]: row["ip_address"] for row in sessions.json()["items"]}
        assert by_id[behind.json()["session_id"]] == "203.0.113.20"
        assert by_id[spoofed.json()["session_id"]] == "192.0.2.30"


class TestRedisStorage:
    async def test_shared_by_two_app_instances(self, make_app: AppFactory, redis_url: str, redis_prefix: str) -> None:
        settings = {"RATE_LIMIT_STORAGE_URI": redis_url, "RATE_LIMIT_KEY_PREFIX": redis_prefix}
        first = await limited_app(make_app, RATE_LIMIT_DEFAULT="3/minute", **settings)
        second = await limited_app(make_app, RATE_LIMIT_DEFAULT="3/minute", **settings)
        statuses = []
        for app in (first, second, first, second):
            async with client_for(app) as client:
                statuses.append((await client.get(f"{API}/users/me")).status_code)
        assert statuses == [401, 401, 401, 429]
        assert redis.Redis.from_url(redis_url).keys(f"{redis_prefix}*")

    async def test_limit_holds_across_uvicorn_workers(
        self, database_url: str, redis_url: str, redis_prefix: str
    ) -> None:
        limit = 25
        env = {
            "RATE_LIMIT_ENABLED": "true",
            "RATE_LIMIT_STORAGE_URI": redis_url,
            "RATE_LIMIT_KEY_PREFIX": redis_prefix,
            "RATE_LIMIT_DEFAULT": f"{limit}/minute",
        }
        with uvicorn_server(database_url, workers=2, **env) as base_url:
            limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)  # new connections: both workers
            async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
                responses = await asyncio.gather(*(client.get(f"{API}/users/me") for _ in range(3 * limit)))
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {401: limit, 429: 2 * limit}, statuses

    async def test_unreachable_redis_fails_open(self, make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
        closed = free_port()  # nothing listens there
        app = await limited_app(
            make_app, RATE_LIMIT_DEFAULT="1/minute", RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{closed}/0"
        )
        user = await create_user(app)
        with caplog.at_level(logging.WARNING, logger="app.rate_limit"):
            async with client_for(app) as client:
                for _ in range(3):
                    response = await client.get(f"{API}/users/me", headers=user.headers)
                    assert response.status_code == 200
                    assert "X-RateLimit-Limit" not in response.headers
        assert any("rate-limit storage unavailable" in record.getMessage() for record in caplog.records)

    async def test_redis_outage_then_recovery(
        self, make_app: AppFactory, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        proxy = TcpProxy("127.0.0.1", 6379)
        await proxy.start()
        try:
            database = redis_url.rsplit("/", 1)[1]
            app = await limited_app(
                make_app,
                RATE_LIMIT_DEFAULT="2/minute",
                RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{proxy.port}/{database}",
                RATE_LIMIT_KEY_PREFIX=redis_prefix,
            )
            state_of(app).rate_limiter.cooldown = 0  # retry Redis on the very next request
            async with client_for(app) as client:
                first = await client.get(f"{API}/users/me")
                assert first.headers["X-RateLimit-Remaining"] == "1"
                await proxy.stop()
                with caplog.at_level(logging.WARNING, logger="app.rate_limit"):
                    during = [await client.get(f"{API}/users/me") for _ in range(3)]
                assert [r.status_code for r in during] == [401, 401, 401]  # served, unlimited
                assert all("X-RateLimit-Limit" not in r.headers for r in during)
                assert "rate-limit storage unavailable" in caplog.text
                await proxy.start()
                statuses = []
                for _ in range(4):  # the pool may spend a request noticing its connections died
                    statuses.append((await client.get(f"{API}/users/me")).status_code)
                assert statuses[-1] == 429  # counting again, on the counter kept in Redis
        finally:
            await proxy.stop()
