"""TOTP (RFC 6238) with pyotp, the secret's encryption at rest, and recovery codes. Pure functions, no I/O.

- The secret is encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from SECRET_KEY by HKDF
  (app.core.security.derived_key): a database reader learns nothing. Rotating SECRET_KEY makes every stored
  secret and recovery code unusable, so users with MFA on could no longer finish a login (docs/AUTH.md).
- A code is checked for the current 30-second step and one step either side (clock skew), and accepted only
  for a step later than the last one accepted (the caller stores it): a code is never accepted twice.
- Recovery codes: 60 random bits each, shown once; stored as HMAC-SHA256 under a derived key. A fast keyed
  hash is enough for secrets this long (nobody can guess 2^60), and it lets the check be one indexed lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp
from cryptography.fernet import Fernet, InvalidToken

from app.core import security
from app.core.settings import Settings

DIGITS = 6
INTERVAL = 30
SKEW_STEPS = 1
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off a screen or paper
_RECOVERY_GROUPS, _RECOVERY_GROUP_LENGTH = 3, 4  # 12 symbols of 31: about 59 bits


def _fernet(settings: Settings) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(security.derived_key(settings, "mfa-totp-secret/v1")))


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits, RFC 4226's recommended length


def encrypt_secret(settings: Settings, secret: str) -> str:
    return _fernet(settings).encrypt(secret.encode()).decode()


def decrypt_secret(settings: Settings, encrypted: str) -> str | None:
    """The secret, or None when it cannot be decrypted (SECRET_KEY changed): no code can match then."""
    try:
        return _fernet(settings).decrypt(encrypted.encode()).decode()
    except InvalidToken:
        return None


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(name=account, issuer_name=issuer)


def current_step(now: datetime) -> int:
    return int(now.timestamp()) // INTERVAL


def matching_step(secret: str, code: str, *, now: datetime, after: int | None) -> int | None:
    """The time step (within ±SKEW_STEPS of now, and later than ``after``) whose code is ``code``; else None."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    now_step = current_step(now)
    for step in range(now_step - SKEW_STEPS, now_step + SKEW_STEPS + 1):
        if after is not None and step <= after:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    return [
        "-".join(
            "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LENGTH))
            for _ in range(_RECOVERY_GROUPS)
        )
        for _ in range(RECOVERY_CODE_COUNT)
    ]


def hash_recovery_code(settings: Settings, code: str) -> str:
    """Case, spaces and dashes do not matter (a code typed from paper)."""
    normalized = "".join(ch for ch in code.lower() if ch.isalnum())
    key = security.derived_key(settings, "mfa-recovery-code/v1")
    return hmac.new(key, normalized.encode(), hashlib.sha256).hexdigest()
