"""Passwords (argon2 off the event loop), this API's JWTs, and opaque secret tokens."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from passlib.context import CryptContext

from app.core.settings import Settings

# argon2id at 64 MiB, t=2, p=1 (its cost: docs/SCALING.md and ../shared/DEPENDENCIES.md); bcrypt only to verify
# hashes from older data, which `verify_and_update` re-hashes as argon2 on the next login.
pwd_context = CryptContext(
    schemes=["argon2", "bcrypt"],
    deprecated=["bcrypt"],
    argon2__type="ID",
    argon2__memory_cost=65536,
    argon2__time_cost=2,
    argon2__parallelism=1,
)

# Hashing releases the GIL; never more hashes in flight than cores, so other requests keep a thread.
_hash_limiter: anyio.CapacityLimiter | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset), not the machine's count.
    Two 64 MiB hashes time-sharing one core run slower together than one after the other (cache)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _limiter() -> anyio.CapacityLimiter:
    global _hash_limiter
    if _hash_limiter is None:
        _hash_limiter = anyio.CapacityLimiter(usable_cpus())
    return _hash_limiter


def _verify_and_update(password: str, hashed: str) -> tuple[bool, str | None]:
    try:
        ok, new_hash = pwd_context.verify_and_update(password, hashed)
    except ValueError:
        # bcrypt refuses secrets over 72 bytes: such a password cannot match a bcrypt hash.
        return False, None
    return bool(ok), new_hash


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(pwd_context.hash, password, limiter=_limiter())


async def verify_password(password: str, hashed: str) -> tuple[bool, str | None]:
    """(matches, new hash when the stored one should be upgraded)."""
    return await anyio.to_thread.run_sync(_verify_and_update, password, hashed, limiter=_limiter())


_DUMMY_HASH: str | None = None


async def verify_dummy_password(password: str) -> None:
    """Spend the time a real verification takes, so unknown emails cannot be told apart by timing."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = await hash_password(secrets.token_urlsafe(16))
    await verify_password(password, _DUMMY_HASH)


# --- this API's access tokens -------------------------------------------------------------------------

ACCESS_TOKEN_TYPE = "access"
JWT_ALGORITHM = "HS256"


AALS = frozenset({"aal1", "aal2"})


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: datetime
    aal: str = "aal1"


def create_access_token(settings: Settings, *, user_id: uuid.UUID, session_id: uuid.UUID, aal: str = "aal1") -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "sid": str(session_id),
        "aal": aal,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES),
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "jti": secrets.token_urlsafe(12),
        "type": ACCESS_TOKEN_TYPE,
    }
    return jwt.encode(payload, settings.SECRET_KEY, algorithm=JWT_ALGORITHM, headers={"typ": "JWT"})


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    """Raises jwt.PyJWTError (or ValueError) for anything that is not a valid access token of ours."""
    payload: dict[str, Any] = jwt.decode(
        token,
        settings.SECRET_KEY,
        algorithms=[JWT_ALGORITHM],
        audience=settings.JWT_AUDIENCE,
        issuer=settings.JWT_ISSUER,
        options={"require": ["exp", "iat", "sub", "sid", "iss", "aud", "jti", "type"]},
    )
    if payload.get("type") != ACCESS_TOKEN_TYPE:
        raise jwt.InvalidTokenError("not an access token")
    if not isinstance(payload["sid"], str):
        raise jwt.InvalidTokenError("sid must be a string")
    aal = payload.get("aal", "aal1")
    if aal not in AALS:
        raise jwt.InvalidTokenError("unknown aal")
    return AccessClaims(
        user_id=uuid.UUID(payload["sub"]),
        session_id=uuid.UUID(payload["sid"]),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        aal=aal,
    )


# --- opaque tokens ------------------------------------------------------------------------------------

REFRESH_TOKEN_PREFIX = "rt"


def new_salt() -> str:
    return secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_refresh_token(settings: Settings, *, session_id: uuid.UUID, generation: int, salt: str) -> str:
    """``rt.<session id>.<generation>.<HMAC-SHA256>``: 256 bits of secret, re-derivable only with SECRET_KEY."""
    mac = hmac.new(
        settings.SECRET_KEY.encode(), f"refresh|{session_id}|{generation}|{salt}".encode(), hashlib.sha256
    ).digest()
    return f"{REFRESH_TOKEN_PREFIX}.{_b64(session_id.bytes)}.{generation}.{_b64(mac)}"


@dataclass(frozen=True, slots=True)
class RefreshTokenParts:
    session_id: uuid.UUID
    generation: int


def parse_refresh_token(token: str) -> RefreshTokenParts | None:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != REFRESH_TOKEN_PREFIX or not parts[2].isdigit() or len(parts[2]) > 9:
        return None
    try:
        session_bytes = _unb64(parts[1])
        return RefreshTokenParts(session_id=uuid.UUID(bytes=session_bytes), generation=int(parts[2]))
    except (ValueError, TypeError):
        return None


def refresh_token_matches(settings: Settings, token: str, *, session_id: uuid.UUID, generation: int, salt: str) -> bool:
    expected = derive_refresh_token(settings, session_id=session_id, generation=generation, salt=salt)
    return hmac.compare_digest(expected.encode(), token.encode())


def new_secret_token() -> str:
    """A single-use secret for mails and invitations: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- keys derived from SECRET_KEY ---------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _derive(secret_key: str, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret_key.encode())


def derived_key(settings: Settings, purpose: str) -> bytes:
    """A 256-bit key for one purpose (HKDF-SHA256 of SECRET_KEY): a key never serves two purposes, and none
    of them is SECRET_KEY itself, which signs the JWTs."""
    return _derive(settings.SECRET_KEY, purpose)


# --- mfa tokens (the second step of a login) ----------------------------------------------------------

MFA_TOKEN_PREFIX = "mfa"


def _mfa_mac(settings: Settings, challenge_id: uuid.UUID, user_id: uuid.UUID) -> bytes:
    key = derived_key(settings, "mfa-token/v1")
    return hmac.new(key, f"{challenge_id}|{user_id}".encode(), hashlib.sha256).digest()


def create_mfa_token(settings: Settings, *, challenge_id: uuid.UUID, user_id: uuid.UUID) -> str:
    """``mfa.<challenge id>.<user id>.<HMAC>``: names one login challenge; the database keeps no copy (only the
    challenge row, which without SECRET_KEY gives no token). The user is readable so that the rate limiter can
    count verify attempts per user without a database lookup, once the HMAC checks."""
    mac = _mfa_mac(settings, challenge_id, user_id)
    return f"{MFA_TOKEN_PREFIX}.{_b64(challenge_id.bytes)}.{_b64(user_id.bytes)}.{_b64(mac)}"


@dataclass(frozen=True, slots=True)
class MfaTokenParts:
    challenge_id: uuid.UUID
    user_id: uuid.UUID


def parse_mfa_token(settings: Settings, token: str) -> MfaTokenParts | None:
    """The challenge and user an authentic mfa token names; None for anything else."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != MFA_TOKEN_PREFIX or len(token) > 200:
        return None
    try:
        challenge_id = uuid.UUID(bytes=_unb64(parts[1]))
        user_id = uuid.UUID(bytes=_unb64(parts[2]))
        mac = _unb64(parts[3])
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _mfa_mac(settings, challenge_id, user_id)):
        return None
    return MfaTokenParts(challenge_id=challenge_id, user_id=user_id)


# --- organization API keys ----------------------------------------------------------------------------

API_KEY_PREFIX = "oak_"
API_KEY_PREFIX_CHARS = 12  # the visible part: 48 random bits in hex, unique (the lookup column)
API_KEY_SECRET_CHARS = 43  # secrets.token_urlsafe(32): 256 bits
API_KEY_TAG_CHARS = 8  # 48 bits of HMAC: a guessed or mistyped key is refused before any database access
API_KEY_LENGTH = len(API_KEY_PREFIX) + API_KEY_PREFIX_CHARS + 1 + API_KEY_SECRET_CHARS + API_KEY_TAG_CHARS
_HEX = frozenset("0123456789abcdef")


def _api_key_tag(settings: Settings, body: str) -> str:
    mac = hmac.new(derived_key(settings, "api-key-tag/v1"), body.encode(), hashlib.sha256).digest()
    return _b64(mac)[:API_KEY_TAG_CHARS]


def new_api_key(settings: Settings) -> tuple[str, str]:
    """(prefix, key): ``oak_<prefix>_<secret><tag>``. The secret is 256 random bits; the tag is an HMAC of
    everything before it under a key derived from SECRET_KEY, so that only this deployment makes well-formed keys."""
    prefix = secrets.token_hex(API_KEY_PREFIX_CHARS // 2)
    body = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return prefix, body + _api_key_tag(settings, body)


def parse_api_key(settings: Settings, key: str) -> str | None:
    """The prefix of a well-formed key of this deployment (format and tag checked, no database); else None."""
    if len(key) != API_KEY_LENGTH or not key.startswith(API_KEY_PREFIX):
        return None
    prefix_end = len(API_KEY_PREFIX) + API_KEY_PREFIX_CHARS
    prefix = key[len(API_KEY_PREFIX) : prefix_end]
    if key[prefix_end] != "_" or not _HEX.issuperset(prefix):
        return None
    body, tag = key[:-API_KEY_TAG_CHARS], key[-API_KEY_TAG_CHARS:]
    if not hmac.compare_digest(tag.encode(), _api_key_tag(settings, body).encode()):
        return None
    return prefix


def api_key_hash(settings: Settings, key: str) -> str:
    """What the database keeps of a key: HMAC-SHA256 under a key derived from SECRET_KEY (a fast keyed hash is
    right for a 256-bit random secret: nothing to brute-force, and a database reader cannot test guesses)."""
    return hmac.new(derived_key(settings, "api-key-hash/v1"), key.encode(), hashlib.sha256).hexdigest()


def api_key_matches(settings: Settings, key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(api_key_hash(settings, key).encode(), stored_hash.encode())
