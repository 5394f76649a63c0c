"""Seeding by SQL (COPY and generate_series, never the API) plus tokens minted with the app's own code."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from app.core import security
from app.core.settings import Settings
from app.users.service import SIGNUP_CREDITS_REASON
from bench.common import SECRET_KEY

PASSWORD = "bench-Passw0rd-8c1f-unusual"
SUPABASE_SECRET = "bench-supabase-jwt-secret-with-at-least-32-characters"
TOKEN_MINUTES = 240  # long enough for any bench run; the servers get the same setting
CREDITS = 900_000_000  # plenty for any flood of spends
JWKS_PATH = "/auth/v1/.well-known/jwks.json"

USER_COLUMNS = (
    "id",
    "email",
    "hashed_password",
    "full_name",
    "is_active",
    "is_superuser",
    "is_verified",
    "auth_provider",
    "created_at",
    "updated_at",
)


def settings_for(dsn: str, **extra: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        ENVIRONMENT="test",
        DATABASE_URL=dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        SECRET_KEY=SECRET_KEY,
        ACCESS_TOKEN_EXPIRE_MINUTES=TOKEN_MINUTES,
        **extra,
    )


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SeededUser:
    id: uuid.UUID
    email: str


async def insert_users(
    connection: asyncpg.Connection, count: int, *, hashed: str, prefix: str = "bench", superuser_first: bool = False
) -> list[SeededUser]:
    """``count`` own accounts sharing one password hash, each with a profile holding plenty of credits and the
    ledger row that grants them (a balance always equals its ledger's sum, docs/CREDITS.md)."""
    stamp = now()
    users = [SeededUser(uuid.uuid4(), f"{prefix}{i}@example.com") for i in range(count)]
    records = [
        (u.id, u.email, hashed, f"Bench User {i}", True, superuser_first and i == 0, True, "local", stamp, stamp)
        for i, u in enumerate(users)
    ]
    await connection.copy_records_to_table("users", records=records, columns=USER_COLUMNS)
    profiles = [(u.id, f"Bench User {i}", None, CREDITS, stamp, stamp) for i, u in enumerate(users)]
    await connection.copy_records_to_table(
        "profiles", records=profiles, columns=("id", "full_name", "avatar_url", "credits", "created_at", "updated_at")
    )
    granted = stamp - timedelta(days=1)  # older than anything a bench adds to the ledger
    ledger = [(uuid.uuid4(), u.id, CREDITS, CREDITS, SIGNUP_CREDITS_REASON, granted) for u in users]
    await connection.copy_records_to_table(
        "credit_transactions",
        records=ledger,
        columns=("id", "user_id", "amount", "balance_after", "reason", "created_at"),
    )
    return users


async def insert_org(
    connection: asyncpg.Connection, members: list[SeededUser], *, slug: str = "bench-org"
) -> uuid.UUID:
    """An organization; the first member owns it."""
    org_id = uuid.uuid4()
    stamp = now()
    await connection.execute(
        "INSERT INTO organizations (id, name, slug, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        org_id,
        "Bench Org",
        slug,
        stamp,
    )
    records = [
        (org_id, m.id, "owner" if i == 0 else "member", stamp + timedelta(microseconds=i))
        for i, m in enumerate(members)
    ]
    await connection.copy_records_to_table(
        "memberships", records=records, columns=("org_id", "user_id", "role", "created_at")
    )
    return org_id


@dataclass
class Tokens:
    session_id: uuid.UUID
    access_token: str
    refresh_token: str


async def insert_sessions(connection: asyncpg.Connection, settings: Settings, users: list[SeededUser]) -> list[Tokens]:
    """One fresh session per user, with tokens derived exactly as the app derives them."""
    stamp = now()
    rows, tokens = [], []
    for user in users:
        session_id, salt = uuid.uuid4(), security.new_salt()
        rows.append((session_id, user.id, salt, 0, "bench", stamp, stamp, stamp + timedelta(days=7)))
        tokens.append(
            Tokens(
                session_id,
                security.create_access_token(settings, user_id=user.id, session_id=session_id),
                security.derive_refresh_token(settings, session_id=session_id, generation=0, salt=salt),
            )
        )
    await connection.copy_records_to_table(
        "auth_sessions",
        records=rows,
        columns=("id", "user_id", "token_salt", "generation", "user_agent", "created_at", "last_used_at", "expires_at"),
    )
    return tokens


# --- Supabase ---------------------------------------------------------------------------------------------


@dataclass
class Supabase:
    """A JWKS served over real HTTP on 127.0.0.1 (SUPABASE_URL points here) and tokens signed like Supabase's."""

    key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    kid: str = "bench-ec"
    hits: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = dict(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True))
        jwk.update(kid=self.kid, alg="ES256", use="sig")
        return {"keys": [jwk]}

    def start(self) -> None:
        body = json.dumps(self.jwks()).encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def env(self) -> dict[str, str]:
        return {"SUPABASE_URL": self.url, "SUPABASE_JWT_SECRET": SUPABASE_SECRET}

    def token(self, sub: uuid.UUID, *, algorithm: str) -> str:
        issued = int(time.time())
        claims = {
            "sub": str(sub),
            "aud": "authenticated",
            "role": "authenticated",
            "iss": f"{self.url}/auth/v1",
            "iat": issued,
            "exp": issued + TOKEN_MINUTES * 60,
            "email": f"supabase-{sub.hex[:12]}@example.com",
            "user_metadata": {"email_verified": True, "full_name": "Supabase Bench"},
            "is_anonymous": False,
        }
        if algorithm == "HS256":
            return jwt.encode(claims, SUPABASE_SECRET, algorithm="HS256")
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
