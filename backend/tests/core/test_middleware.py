"""RequestContextMiddleware pieces: which peer's X-Forwarded-For is believed, request ids."""

from __future__ import annotations

import pytest

from app.core.middleware import TrustedProxies
from app.core.rate_limit import RateLimiter, RateLimitMiddleware, ip_key
from app.core.settings import Settings
from tests.conftest import AppFactory, client_for

PROXIES = TrustedProxies(["10.0.0.0/8", " 2001:db8:1::/48 ", ""])


class TestTrustedProxies:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "expected"),
        [
            ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # untrusted peer: header ignored
            ("192.0.2.1", None, "192.0.2.1"),
            ("10.0.0.5", None, "10.0.0.5"),
            ("10.0.0.5", "203.0.113.9", "203.0.113.9"),
            ("10.0.0.5", "1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the client's own entry is ignored
            ("10.0.0.5", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # two proxies of ours
            ("10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.8"),  # only proxies: the farthest one
            ("10.0.0.5", "garbage, 203.0.113.9", "203.0.113.9"),
            ("10.0.0.5", "203.0.113.9, garbage", "10.0.0.5"),  # a malformed hop next to us: believe nothing
            ("10.0.0.5", "203.0.113.9:4711", "203.0.113.9"),
            ("10.0.0.5", "[2001:db8::5]:443", "2001:db8::5"),
            ("::ffff:10.0.0.5", "203.0.113.9", "203.0.113.9"),  # IPv4-mapped peer
            ("2001:db8:1::9", "2001:db8:2::1", "2001:db8:2::1"),
            ("10.0.0.5", " , ", "10.0.0.5"),
            (None, "203.0.113.9", None),
        ],
    )
    def test_client_ip(self, peer: str | None, forwarded: str | None, expected: str | None) -> None:
        assert PROXIES.client_ip(peer, forwarded) == expected

    def test_none_trusted_by_default(self) -> None:
        assert TrustedProxies([]).client_ip("10.0.0.5", "203.0.113.9") == "10.0.0.5"

    def test_bad_entry_fails_at_start(self) -> None:
        with pytest.raises(ValueError, match="does not appear to be"):
            TrustedProxies(["not-a-network"])

    @pytest.mark.asyncio
    async def test_several_header_lines_form_one_list(self, make_app: AppFactory) -> None:
        app = await make_app(TRUSTED_PROXIES=["10.0.0.0/8"], RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT="1/minute")
        async with client_for(app, client_addr=("10.0.0.5", 1234)) as proxy:
            lines = [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.40")]
            assert (await proxy.get("/api/v1/users/me", headers=lines)).status_code == 401
            # Same real client (the last line, written by our proxy), whatever the client wrote first.
            lines = [("X-Forwarded-For", "1.1.1.2"), ("X-Forwarded-For", "203.0.113.40")]
            assert (await proxy.get("/api/v1/users/me", headers=lines)).status_code == 429


class TestRequestId:
    @pytest.mark.asyncio
    async def test_sane_incoming_id_is_kept(self, make_app: AppFactory) -> None:
        app = await make_app()
        async with client_for(app) as client:
            response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
            assert response.headers["X-Request-ID"] == "abc-123"
            response = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith junk"})
            assert response.headers["X-Request-ID"] != "bad id\twith junk"
            assert len(response.headers["X-Request-ID"]) == 32


class TestRateLimitTable:
    def test_ipv6_grouped_by_64(self) -> None:
        assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
        assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
        assert ip_key("203.0.113.9") == "203.0.113.9"
        assert ip_key(None) == "unknown"

    @pytest.mark.parametrize(
        ("path", "bucket"),
        [
            ("/api/v1/auth/login", "login"),
            ("/api/v1/auth/token", "login"),
            ("/api/v1/auth/register", "register"),
            ("/api/v1/auth/refresh", "refresh"),
            ("/api/v1/auth/password", "password"),
            ("/api/v1/auth/password-reset/request", "reset"),
            ("/api/v1/auth/password-reset/confirm", "reset-confirm"),
            ("/api/v1/auth/password-reset/anything-new", "reset-confirm"),
            ("/api/v1/auth/verify-email/request", "verify"),
            ("/api/v1/auth/verify-email/confirm", "verify-confirm"),
            ("/api/v1/auth/logout", "default"),
            ("/api/v1/auth/passwordx", "default"),
            ("/api/v1/organizations", "default"),
            ("/api/v1/openapi.json", "default"),
            ("/health", None),
            ("/health/live", None),
            ("/docs", None),
            ("/redoc", None),
            ("/api/v1x/auth/login", None),
        ],
    )
    def test_rule_for(self, path: str, bucket: str | None) -> None:
        middleware = RateLimitMiddleware(app=None, settings=Settings(_env_file=None), limiter=None, tokens=None)  # type: ignore[arg-type]
        rule = middleware.rule_for(path)
        assert (rule.limits[0][0].bucket if rule else None) == bucket

    def test_malformed_limit_fails_at_start(self) -> None:
        with pytest.raises(ValueError):
            settings = Settings(_env_file=None, RATE_LIMIT_LOGIN="lots")
            RateLimitMiddleware(app=None, settings=settings, limiter=None, tokens=None)  # type: ignore[arg-type]

    def test_unknown_storage_fails_at_start(self) -> None:
        from limits.errors import ConfigurationError

        with pytest.raises(ConfigurationError):
            RateLimiter("memcachedd://127.0.0.1:1")
