"""Supabase test kit: real keys, tokens minted like Supabase's, and a stub JWKS served over real HTTP.

- ``SECRET``: a legacy HS256 project secret (>= 32 bytes, or pyjwt warns and ``-W error`` fails the run).
- ``EC_KEY`` (ES256) and ``RSA_KEY`` (RS256): served by ``JwksServer`` (127.0.0.1, a thread) under
  ``/auth/v1/.well-known/jwks.json``, which counts its hits and can fail on demand.
- ``mint(...)``: a signed access token with Supabase's claims; ``forge_hs256``/``unsigned`` for attacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from tests.conftest import AppFactory

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    @property
    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.algorithm == "ES256" else jwt.algorithms.RSAAlgorithm
        data: dict[str, Any] = dict(algorithm.to_jwk(self.private.public_key(), as_dict=True))
        data.update(kid=self.kid, alg=self.algorithm, use="sig")
        return data


def ec_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))


def rsa_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", private)


EC_KEY = ec_key("ec-main")
RSA_KEY = rsa_key("rsa-main")


def claims(
    *,
    issuer: str | None,
    sub: uuid.UUID | str | None = None,
    email: str | None = None,
    email_verified: bool = False,
    role: str = "authenticated",
    aud: str = "authenticated",
    expires_in: int = 3600,
    is_anonymous: bool = False,
    drop: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The claims of a Supabase user access token (see Supabase's guides/auth/jwts)."""
    now = int(time.time())
    sub = sub or uuid.uuid4()
    email = f"sb-{uuid.uuid4().hex[:10]}@example.com" if email is None else email
    data: dict[str, Any] = {
        "aud": aud,
        "exp": now + expires_in,
        "iat": now - 5,
        "sub": str(sub),
        "email": email,
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email": email, "email_verified": email_verified, "phone_verified": False, "sub": str(sub)},
        "role": role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": is_anonymous,
    }
    if issuer is not None:
        data["iss"] = issuer
    data.update(extra)
    for name in drop:
        data.pop(name, None)
    return data


def mint(
    payload: dict[str, Any], key: SigningKey | None = None, *, kid: str | None = None, alg: str | None = None
) -> str:
    """Sign with ``key`` (ES256/RS256, header kid) or, without one, with the project's HS256 ``SECRET``."""
    if key is None:
        return jwt.encode(payload, SECRET, algorithm="HS256", headers={"typ": "JWT"})
    headers = {"kid": kid or key.kid, "typ": "JWT"}
    return jwt.encode(payload, key.private, algorithm=alg or key.algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())


def forge_hs256(payload: dict[str, Any], secret: bytes, *, kid: str | None = None) -> str:
    """An HS256 token MACed with any bytes (pyjwt refuses to use a PEM as HMAC key, so this is by hand)."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = _segments(header, payload)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def unsigned(payload: dict[str, Any], *, alg: str = "none") -> str:
    return _segments({"alg": alg, "typ": "JWT"}, payload) + "."


def tamper(token: str) -> str:
    """Change one claim but keep the signature."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["role"] = "authenticated"
    data["email"] = "attacker@example.com"
    return f"{header}.{_b64(json.dumps(data).encode())}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class JwksServer:
    """A Supabase project's JWKS endpoint on 127.0.0.1 (a thread), counting hits, failing on demand."""

    keys: list[SigningKey] = field(default_factory=lambda: [EC_KEY, RSA_KEY])
    status: int = 200
    body: bytes | None = None  # served as is instead of the key set
    extra_jwks: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    @property
    def issuer(self) -> str:
        return self.url + "/auth/v1"

    def document(self) -> bytes:
        if self.body is not None:
            return self.body
        return json.dumps({"keys": [key.jwk for key in self.keys] + self.extra_jwks}).encode()

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits += 1
                    status, body = owner.status, owner.document()
                if self.path != JWKS_PATH:
                    status, body = 404, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def closed_port_url() -> str:
    """A base URL where nothing listens (the JWKS is down: connection refused)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer().start()
    yield server
    server.stop()


SupabaseAppFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def supabase_app(make_app: AppFactory, jwks_server: JwksServer) -> AsyncIterator[SupabaseAppFactory]:
    """``await supabase_app(**settings)``: an app configured for the stub Supabase project."""

    async def factory(**overrides: Any) -> FastAPI:
        settings = {"SUPABASE_URL": jwks_server.url, "SUPABASE_JWT_SECRET": SECRET, **overrides}
        return await make_app(**settings)

    yield factory
