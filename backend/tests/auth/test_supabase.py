"""Supabase access tokens: verification, the JWKS cache, provisioning and the merge rules.

Tokens are minted here with real keys: the HS256 project secret, and EC P-256 / RSA keys served as a JWKS by
a local HTTP server (tests/supabase_tokens.py). The protected endpoint used is GET /users/me.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.auth.exceptions import JwksUnavailableError
from app.auth.identity import SUPABASE_CALLER, SUPABASE_DELETED_AT
from app.auth.jwks import JwksClient, parse_jwks
from app.state import state_of
from app.users.models import User
from tests import supabase_tokens
from tests.conftest import client_for, requires_postgres
from tests.core.test_data import _flat, _sql, statements_sent
from tests.factories import DEFAULT_PASSWORD, create_user, load_user, unique_email
from tests.supabase_tokens import (
    EC_KEY,
    RSA_KEY,
    SECRET,
    JwksServer,
    SupabaseAppFactory,
    bearer,
    claims,
    closed_port_url,
    ec_key,
    forge_hs256,
    mint,
    tamper,
    unsigned,
)

pytestmark = pytest.mark.asyncio
jwks_server, supabase_app = supabase_tokens.jwks_server, supabase_tokens.supabase_app  # fixtures

ME = "/api/v1/users/me"


async def get_me(application: FastAPI, token: str) -> httpx.Response:
    async with client_for(application) as client:
        return await client.get(ME, headers=bearer(token))


def assert_401(response: httpx.Response, code: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


async def count_users(application: FastAPI, **where: object) -> int:
    async with state_of(application).sessionmaker() as session:
        statement = select(func.count()).select_from(User).filter_by(**where)
        return int(await session.scalar(statement) or 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestNotConfigured:
    async def test_supabase_token_401(self, client: httpx.AsyncClient) -> None:
        token = mint(claims(issuer="https://project.supabase.co/auth/v1"))
        response = await client.get(ME, headers=bearer(token))
        assert_401(response)

    async def test_asymmetric_token_401(self, client: httpx.AsyncClient) -> None:
        token = mint(claims(issuer="https://project.supabase.co/auth/v1"), EC_KEY)
        assert_401(await client.get(ME, headers=bearer(token)))


class TestHs256Token:
    async def test_first_request_provisions_user(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        email = unique_email("sb")
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, sub=sub, email=email.upper())))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == str(sub)
        assert body["email"] == email
        assert body["auth_provider"] == "supabase"
        assert body["is_verified"] is False
        assert jwks_server.hits == 0  # HS256 never needs the JWKS

    async def test_verified_email_claim_marks_user_verified(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, email_verified=True)))
        assert response.status_code == 200
        assert response.json()["is_verified"] is True

    async def test_later_request_resolves_same_user(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub))
        first = await get_me(application, token)
        second = await get_me(
            application, mint(claims(issuer=jwks_server.issuer, sub=sub, email=first.json()["email"]))
        )
        assert second.status_code == 200
        assert second.json()["id"] == first.json()["id"] == str(sub)
        assert await count_users(application, id=sub) == 1

    async def test_name_taken_from_user_metadata(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        payload = claims(issuer=jwks_server.issuer)
        payload["user_metadata"]["full_name"] = "Ada Lovelace"
        response = await get_me(application, mint(payload))
        assert response.json()["full_name"] == "Ada Lovelace"

    async def test_expired_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, expires_in=-120)))
        assert_401(response, "token_expired")

    async def test_expired_within_leeway_ok(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, expires_in=-2)))
        assert response.status_code == 200

    @pytest.mark.parametrize("claim", ["exp", "iat", "sub", "aud"])
    async def test_missing_required_claim_401(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, claim: str
    ) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer, drop=(claim,)))))

    async def test_wrong_audience_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer, aud="anon"))))

    @pytest.mark.parametrize(
        "issuer",
        ["https://other-project.supabase.co/auth/v1", "{url}", "{url}/auth/v1/extra", None],
        ids=["other-project", "no-path", "suffix", "missing"],
    )
    async def test_wrong_issuer_401(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, issuer: str | None
    ) -> None:
        application = await supabase_app()
        issuer = issuer.format(url=jwks_server.url) if issuer else None
        assert_401(await get_me(application, mint(claims(issuer=issuer))))

    async def test_issuer_unchecked_without_supabase_url(self, make_app) -> None:
        application = await make_app(SUPABASE_JWT_SECRET=SECRET)
        response = await get_me(application, mint(claims(issuer="https://any.supabase.co/auth/v1")))
        assert response.status_code == 200

    async def test_sub_not_uuid_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer, sub="user-42"))))

    async def test_tampered_signature_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, tamper(mint(claims(issuer=jwks_server.issuer)))))

    async def test_other_secret_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = forge_hs256(claims(issuer=jwks_server.issuer), b"another-project-secret-of-at-least-32-bytes")
        assert_401(await get_me(application, token))

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    async def test_alg_none_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, alg: str) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, unsigned(claims(issuer=jwks_server.issuer), alg=alg)))

    async def test_hs384_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        token = jwt_encode(claims(issuer=jwks_server.issuer), SECRET, "HS384")
        assert_401(await get_me(application, token))

    async def test_garbage_token_401(self, supabase_app: SupabaseAppFactory) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, "not-a-jwt"))


def jwt_encode(payload: dict[str, object], key: str, algorithm: str) -> str:
    import jwt

    return jwt.encode(payload, key, algorithm=algorithm)


class TestRoles:
    @pytest.mark.parametrize("role", ["anon", "service_role", "supabase_admin", ""])
    async def test_non_user_role_401(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, role: str
    ) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer, role=role))))
        assert await count_users(application) == 0

    async def test_missing_role_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer, drop=("role",)))))

    async def test_api_key_shape_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        """Supabase's anon / service_role API keys: no sub, no aud."""
        application = await supabase_app()
        for role in ("anon", "service_role"):
            payload = {"iss": "supabase", "ref": "project", "role": role, "iat": 1700000000, "exp": 4100000000}
            assert_401(await get_me(application, mint(payload)))


class TestAnonymousUsers:
    async def test_anonymous_403(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, email="", is_anonymous=True)))
        assert response.status_code == 403
        assert response.json()["code"] == "anonymous_user"
        assert await count_users(application) == 0

    async def test_anonymous_allowed(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app(SUPABASE_ALLOW_ANONYMOUS=True)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub, email="", is_anonymous=True))
        response = await get_me(application, token)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(sub)
        assert response.json()["email"] == f"{sub}@supabase.invalid"
        assert response.json()["is_verified"] is False

    async def test_anonymous_with_verified_claim_never_merges(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app(SUPABASE_ALLOW_ANONYMOUS=True)
        token = mint(claims(issuer=jwks_server.issuer, email="", email_verified=True, is_anonymous=True))
        response = await get_me(application, token)
        assert response.json()["is_verified"] is False


class TestAsymmetricToken:
    @pytest.mark.parametrize("key", [EC_KEY, RSA_KEY], ids=["ES256", "RS256"])
    async def test_ok(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, key) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer, sub=sub), key))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(sub)
        assert jwks_server.hits == 1

    async def test_cached_keys_not_refetched(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        for key in (EC_KEY, RSA_KEY, EC_KEY):
            assert (await get_me(application, mint(claims(issuer=jwks_server.issuer), key))).status_code == 200
        assert jwks_server.hits == 1

    async def test_asymmetric_only_deployment(self, make_app, jwks_server: JwksServer) -> None:
        """SUPABASE_URL alone (no legacy secret): JWKS tokens pass, HS256 ones are refused."""
        application = await make_app(SUPABASE_URL=jwks_server.url)
        assert (await get_me(application, mint(claims(issuer=jwks_server.issuer), EC_KEY))).status_code == 200
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer))))

    async def test_explicit_jwks_url(self, make_app, jwks_server: JwksServer) -> None:
        application = await make_app(SUPABASE_JWKS_URL=jwks_server.jwks_url)
        token = mint(claims(issuer="https://unchecked.example/auth/v1"), RSA_KEY)
        assert (await get_me(application, token)).status_code == 200

    async def test_unknown_kid_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer), ec_key())))

    async def test_missing_kid_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        import jwt

        application = await supabase_app()
        token = jwt.encode(claims(issuer=jwks_server.issuer), EC_KEY.private, algorithm="ES256")
        assert_401(await get_me(application, token))

    async def test_right_kid_wrong_key_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        impostor = ec_key(EC_KEY.kid)
        assert_401(await get_me(application, mint(claims(issuer=jwks_server.issuer), impostor)))

    async def test_tampered_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        application = await supabase_app()
        assert_401(await get_me(application, tamper(mint(claims(issuer=jwks_server.issuer), RSA_KEY))))

    async def test_alg_other_than_the_keys_401(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        """An RS256 header naming the EC key's kid (signed by a real RSA key) is refused."""
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer), RSA_KEY, kid=EC_KEY.kid)
        assert_401(await get_me(application, token))

    @pytest.mark.parametrize("key", [EC_KEY, RSA_KEY], ids=["EC", "RSA"])
    async def test_hs256_made_with_public_key_401(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, key
    ) -> None:
        """Algorithm confusion: an HS256 token MACed with the published public key."""
        application = await supabase_app()
        payload = claims(issuer=jwks_server.issuer)
        for secret in (key.public_pem, json.dumps(key.jwk).encode()):
            assert_401(await get_me(application, forge_hs256(payload, secret, kid=key.kid)))

    async def test_hs256_confusion_without_secret_401(self, make_app, jwks_server: JwksServer) -> None:
        application = await make_app(SUPABASE_URL=jwks_server.url)
        token = forge_hs256(claims(issuer=jwks_server.issuer), RSA_KEY.public_pem, kid=RSA_KEY.kid)
        assert_401(await get_me(application, token))

    async def test_symmetric_key_in_jwks_is_never_used(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        oct_secret = b"an-oct-key-published-in-the-jwks-by-mistake!"
        jwks_server.extra_jwks = [
            {"kty": "oct", "kid": "oct-1", "alg": "HS256", "k": jwt_b64(oct_secret)},
        ]
        application = await supabase_app(SUPABASE_JWT_SECRET=None)
        assert_401(await get_me(application, forge_hs256(claims(issuer=jwks_server.issuer), oct_secret, kid="oct-1")))

    async def test_key_rotation_new_kid_accepted(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app(SUPABASE_JWKS_MIN_REFETCH_SECONDS=0)
        assert (await get_me(application, mint(claims(issuer=jwks_server.issuer), EC_KEY))).status_code == 200
        rotated = ec_key("ec-rotated")
        jwks_server.keys = [rotated, EC_KEY]
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer), rotated))
        assert response.status_code == 200, response.text
        assert jwks_server.hits == 2

    async def test_unknown_kid_flood_fetches_at_most_once(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app(SUPABASE_JWKS_MIN_REFETCH_SECONDS=300)
        assert (await get_me(application, mint(claims(issuer=jwks_server.issuer), EC_KEY))).status_code == 200
        tokens = [mint(claims(issuer=jwks_server.issuer), EC_KEY, kid=f"bogus-{i}") for i in range(30)]
        async with client_for(application) as client:
            responses = await asyncio.gather(*(client.get(ME, headers=bearer(token)) for token in tokens))
        assert [r.status_code for r in responses] == [401] * 30
        assert jwks_server.hits == 1

    async def test_jwks_down_503(self, make_app) -> None:
        url = closed_port_url()
        application = await make_app(SUPABASE_URL=url)
        response = await get_me(application, mint(claims(issuer=f"{url}/auth/v1"), EC_KEY))
        assert response.status_code == 503
        assert response.json()["code"] == "jwks_unavailable"
        assert int(response.headers["retry-after"]) >= 1

    @pytest.mark.parametrize(("status", "body"), [(500, None), (200, b"<html>"), (200, b'{"nokeys": 1}')])
    async def test_jwks_broken_503(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, status: int, body: bytes | None
    ) -> None:
        jwks_server.status, jwks_server.body = status, body
        application = await supabase_app()
        response = await get_me(application, mint(claims(issuer=jwks_server.issuer), RSA_KEY))
        assert response.status_code == 503
        assert response.json()["code"] == "jwks_unavailable"

    async def test_outage_does_not_hammer_jwks(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        jwks_server.status = 500
        application = await supabase_app(SUPABASE_JWKS_MIN_REFETCH_SECONDS=300)
        token = mint(claims(issuer=jwks_server.issuer), EC_KEY)
        statuses = [(await get_me(application, token)).status_code for _ in range(10)]
        assert statuses == [503] * 10
        assert jwks_server.hits == 1

    async def test_recovers_after_outage(self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer) -> None:
        jwks_server.status = 503
        application = await supabase_app(SUPABASE_JWKS_MIN_REFETCH_SECONDS=0)
        token = mint(claims(issuer=jwks_server.issuer), EC_KEY)
        assert (await get_me(application, token)).status_code == 503
        jwks_server.status = 200
        assert (await get_me(application, token)).status_code == 200

    async def test_hs256_unaffected_by_jwks_outage(self, make_app) -> None:
        url = closed_port_url()
        application = await make_app(SUPABASE_URL=url, SUPABASE_JWT_SECRET=SECRET)
        assert (await get_me(application, mint(claims(issuer=f"{url}/auth/v1")))).status_code == 200


def jwt_b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TestLifespan:
    async def test_jwks_client_made_and_closed(self, base_settings: dict[str, Any]) -> None:
        from app.main import create_app
        from tests.conftest import make_settings

        application = create_app(make_settings(base_settings, SUPABASE_URL=closed_port_url()))
        async with application.router.lifespan_context(application):  # Supabase down: startup still works
            jwks = state_of(application).jwks
            assert isinstance(jwks, JwksClient)
            assert jwks.url.endswith("/auth/v1/.well-known/jwks.json")
            assert jwks.fetch_count == 0  # no fetch before the first asymmetric token
        assert jwks._http.is_closed

    async def test_no_client_without_supabase(self, app: FastAPI) -> None:
        assert state_of(app).jwks is None


class TestJwksClient:
    """The cache rules, with a fake clock (no sleeping) against the local JWKS server."""

    def client(self, server: JwksServer, clock: FakeClock, *, cache: float = 600, refetch: float = 30) -> JwksClient:
        return JwksClient(server.jwks_url, cache_seconds=cache, min_refetch_seconds=refetch, clock=clock)

    async def test_concurrent_misses_share_one_fetch(self, jwks_server: JwksServer) -> None:
        jwks = self.client(jwks_server, FakeClock())
        try:
            keys = await asyncio.gather(*(jwks.get_key(k) for k in [EC_KEY.kid, RSA_KEY.kid, "unknown"] * 7))
        finally:
            await jwks.aclose()
        assert [key is not None for key in keys[:3]] == [True, True, False]
        assert jwks_server.hits == 1

    async def test_unknown_kid_refetch_at_most_once_per_interval(self, jwks_server: JwksServer) -> None:
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, refetch=30)
        try:
            assert await jwks.get_key(EC_KEY.kid) is not None
            clock.now += 29
            assert await asyncio.gather(*(jwks.get_key(f"bogus-{i}") for i in range(50))) == [None] * 50
            assert jwks_server.hits == 1
            clock.now += 2
            assert await asyncio.gather(*(jwks.get_key(f"bogus-{i}") for i in range(50))) == [None] * 50
            assert jwks_server.hits == 2
            clock.now += 10
            assert await jwks.get_key("bogus-again") is None
            assert jwks_server.hits == 2
        finally:
            await jwks.aclose()

    async def test_rotation_visible_after_interval(self, jwks_server: JwksServer) -> None:
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, refetch=30)
        rotated = ec_key()
        try:
            await jwks.get_key(EC_KEY.kid)
            jwks_server.keys = [rotated]
            clock.now += 5
            assert await jwks.get_key(rotated.kid) is None
            clock.now += 30
            key = await jwks.get_key(rotated.kid)
            assert key is not None and key.algorithm_name == "ES256"
            assert await jwks.get_key(EC_KEY.kid) is None  # retired keys go with the old set
        finally:
            await jwks.aclose()

    async def test_cache_expires(self, jwks_server: JwksServer) -> None:
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, cache=600)
        try:
            await jwks.get_key(EC_KEY.kid)
            clock.now += 599
            await jwks.get_key(EC_KEY.kid)
            assert jwks_server.hits == 1
            clock.now += 2
            await jwks.get_key(EC_KEY.kid)
            assert jwks_server.hits == 2
        finally:
            await jwks.aclose()

    async def test_expired_cache_and_outage_raise(self, jwks_server: JwksServer) -> None:
        """Stale keys are not used once the TTL is over and the refetch fails."""
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, cache=60)
        try:
            await jwks.get_key(EC_KEY.kid)
            jwks_server.status = 502
            clock.now += 61
            with pytest.raises(JwksUnavailableError):
                await jwks.get_key(EC_KEY.kid)
        finally:
            await jwks.aclose()

    async def test_failure_backoff(self, jwks_server: JwksServer) -> None:
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, refetch=30)
        jwks_server.status = 500
        try:
            for _ in range(5):
                with pytest.raises(JwksUnavailableError):
                    await jwks.get_key(EC_KEY.kid)
            assert jwks_server.hits == 1
            jwks_server.status = 200
            clock.now += jwks.failure_backoff_seconds
            assert await jwks.get_key(EC_KEY.kid) is not None
            assert jwks_server.hits == 2
        finally:
            await jwks.aclose()

    async def test_unknown_kid_during_outage_503(self, jwks_server: JwksServer) -> None:
        clock = FakeClock()
        jwks = self.client(jwks_server, clock, refetch=30)
        try:
            await jwks.get_key(EC_KEY.kid)
            jwks_server.status = 500
            clock.now += 31
            with pytest.raises(JwksUnavailableError):
                await jwks.get_key("rotated-in-while-down")
            assert await jwks.get_key(EC_KEY.kid) is not None  # the fresh set still serves known kids
        finally:
            await jwks.aclose()

    async def test_parse_keeps_only_pinned_asymmetric_keys(self) -> None:
        rsa_as_es = {**RSA_KEY.jwk, "kid": "rsa-claims-es256", "alg": "ES256"}
        encryption = {**EC_KEY.jwk, "kid": "enc", "use": "enc"}
        p384 = {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}
        document = {
            "keys": [
                EC_KEY.jwk,
                RSA_KEY.jwk,
                {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
                rsa_as_es,
                encryption,
                p384,
                {k: v for k, v in EC_KEY.jwk.items() if k != "kid"},
                "junk",
            ]
        }
        keys = parse_jwks(document)
        assert sorted(keys) == sorted([EC_KEY.kid, RSA_KEY.kid])
        assert keys[EC_KEY.kid].algorithm_name == "ES256"
        assert keys[RSA_KEY.kid].algorithm_name == "RS256"

    async def test_parse_infers_algorithm_without_alg(self) -> None:
        document = {"keys": [{k: v for k, v in key.jwk.items() if k != "alg"} for key in (EC_KEY, RSA_KEY)]}
        keys = parse_jwks(document)
        assert {kid: key.algorithm_name for kid, key in keys.items()} == {EC_KEY.kid: "ES256", RSA_KEY.kid: "RS256"}


class TestProvisioning:
    @requires_postgres()
    async def test_concurrent_first_requests_make_one_user(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        email = unique_email("race")
        tokens = [mint(claims(issuer=jwks_server.issuer, sub=sub, email=email), EC_KEY) for _ in range(20)]
        async with client_for(application) as client:
            responses = await asyncio.gather(*(client.get(ME, headers=bearer(token)) for token in tokens))
        assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
        assert {r.json()["id"] for r in responses} == {str(sub)}
        assert await count_users(application, email=email) == 1
        assert jwks_server.hits == 1

    @requires_postgres()
    async def test_first_request_writes_in_one_short_transaction(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """First sight: the lookups, then one transaction of its own (BEGIN, one INSERT, COMMIT) on the asyncpg
        pool, nothing through the ORM, and its connection back before the handler's transaction takes one (a
        pool of one connection would otherwise wait for itself)."""
        application = await supabase_app(DATABASE_DRIVER_POOL_SIZE=1, DATABASE_POOL_TIMEOUT=2)
        token = mint(claims(issuer=jwks_server.issuer, email=unique_email("first"), email_verified=True))
        async with client_for(application) as client, statements_sent(application, monkeypatch) as sent:
            response = await client.post("/api/v1/profile", headers=bearer(token))
        assert response.status_code == 201, response.text
        statements = [_flat(sql) for sql in sent]
        assert statements[:2] == [_sql(SUPABASE_CALLER), _sql(SUPABASE_DELETED_AT)], statements
        assert statements[2] == "BEGIN;" and statements[4] == "COMMIT;", statements
        assert statements[3].startswith("INSERT INTO users ") and "ON CONFLICT DO NOTHING RETURNING" in statements[3]
        assert statements[5] == "BEGIN;" and statements[-1] == "COMMIT;", statements  # the handler's own

    @requires_postgres()
    async def test_a_known_user_is_one_statement_even_with_a_token_older_than_the_account(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The token was issued before its account was provisioned (every first token of a new user): the
        tombstone check comes with the user's lookup, one round trip, not a second lookup on every request."""
        application = await supabase_app()
        token = mint(claims(issuer=jwks_server.issuer, email=unique_email("old"), email_verified=True))
        async with client_for(application) as client:
            assert (await client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200  # provisions
            async with statements_sent(application, monkeypatch) as sent:
                response = await client.get("/api/v1/users/me", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert [_flat(sql) for sql in sent] == [_sql(SUPABASE_CALLER)]

    async def test_local_account_same_email_unverified_token_409(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        local = await create_user(application)
        token = mint(claims(issuer=jwks_server.issuer, email=local.email.upper(), email_verified=False))
        response = await get_me(application, token)
        assert response.status_code == 409
        assert response.json()["code"] == "account_exists"
        assert await count_users(application) == 1
        stored = await load_user(application, local.id)
        assert stored is not None and stored.supabase_id is None

    async def test_verified_email_merges_into_local_account(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        local = await create_user(application, is_verified=True)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub, email=local.email, email_verified=True), EC_KEY)
        response = await get_me(application, token)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(local.id)
        assert response.json()["auth_provider"] == "local"
        again = await get_me(application, mint(claims(issuer=jwks_server.issuer, sub=sub, email=local.email)))
        assert again.json()["id"] == str(local.id)
        assert await count_users(application) == 1
        # a verified own account keeps its password and sessions
        assert (await get_me(application, local.access_token)).status_code == 200
        async with client_for(application) as client:
            login = await client.post("/api/v1/auth/login", json={"email": local.email, "password": DEFAULT_PASSWORD})
        assert login.status_code == 200

    async def test_email_confirmed_at_counts_as_verified(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        local = await create_user(application)
        payload = claims(issuer=jwks_server.issuer, email=local.email, email_confirmed_at="2026-11-01T10:00:00Z")
        response = await get_me(application, mint(payload))
        assert response.status_code == 200
        assert response.json()["id"] == str(local.id)

    async def test_merge_into_unverified_local_account_makes_it_supabase_only(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        """Pre-hijacking: whoever registered the email without proving it loses the password and sessions."""
        application = await supabase_app()
        squatter = await create_user(application, is_verified=False)
        token = mint(claims(issuer=jwks_server.issuer, email=squatter.email, email_verified=True))
        response = await get_me(application, token)
        assert response.status_code == 200
        assert response.json()["id"] == str(squatter.id)
        assert response.json()["is_verified"] is True
        assert response.json()["auth_provider"] == "supabase"
        assert_401(await get_me(application, squatter.access_token), "session_revoked")
        async with client_for(application) as client:
            login = await client.post(
                "/api/v1/auth/login", json={"email": squatter.email, "password": DEFAULT_PASSWORD}
            )
        assert login.status_code == 401

    async def test_second_supabase_user_same_email_409(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        email = unique_email("twice")
        first = await get_me(application, mint(claims(issuer=jwks_server.issuer, email=email, email_verified=True)))
        assert first.status_code == 200
        second = await get_me(application, mint(claims(issuer=jwks_server.issuer, email=email, email_verified=True)))
        assert second.status_code == 409
        assert second.json()["code"] == "account_exists"

    @requires_postgres()
    async def test_concurrent_verified_merge_links_once(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        local = await create_user(application)
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub, email=local.email, email_verified=True))
        async with client_for(application) as client:
            responses = await asyncio.gather(*(client.get(ME, headers=bearer(token)) for _ in range(10)))
        assert {(r.status_code, r.json()["id"]) for r in responses} == {(200, str(local.id))}
        assert await count_users(application) == 1

    async def test_email_verified_later_updates_user(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub, email = uuid.uuid4(), unique_email()
        await get_me(application, mint(claims(issuer=jwks_server.issuer, sub=sub, email=email)))
        response = await get_me(
            application, mint(claims(issuer=jwks_server.issuer, sub=sub, email=email, email_verified=True))
        )
        assert response.json()["is_verified"] is True

    async def test_deactivated_supabase_user_401(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer
    ) -> None:
        application = await supabase_app()
        sub = uuid.uuid4()
        token = mint(claims(issuer=jwks_server.issuer, sub=sub))
        assert (await get_me(application, token)).status_code == 200
        async with state_of(application).sessionmaker() as session:
            user = await session.get(User, sub)
            assert user is not None
            user.is_active = False
            await session.commit()
        assert_401(await get_me(application, token), "inactive_user")


class TestOwnSessionEndpoints:
    """Sessions of Supabase users are Supabase's: this API's session endpoints answer a clear 400."""

    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", "/api/v1/auth/logout"), ("GET", "/api/v1/auth/sessions")],
    )
    async def test_supabase_token_400(
        self, supabase_app: SupabaseAppFactory, jwks_server: JwksServer, method: str, path: str
    ) -> None:
        application = await supabase_app()
        async with client_for(application) as client:
            response = await client.request(method, path, headers=bearer(mint(claims(issuer=jwks_server.issuer))))
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "not_own_session"
