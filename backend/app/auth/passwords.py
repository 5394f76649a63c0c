"""Password rules of the contract: 8..128 characters, not only spaces, not common, not the email."""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 128
NON_SPACE_PATTERN = r"\S"  # at least one character that is not white space (JSON Schema patterns are unanchored)
# bcrypt (still used to verify older hashes) cannot take more than 72 bytes; argon2 has no such limit,
# and the verify path treats an over-long secret against a bcrypt hash as a mismatch.
COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt.gz"


@cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip().lower() for line in handle if line.strip())


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters long."
    if len(password) > MAX_LENGTH:
        return f"Password must be at most {MAX_LENGTH} characters long."
    if not password.strip():
        return "Password must contain at least one character that is not a space."
    if password.strip().lower() in common_passwords():
        return "This password is too common."
    if email and password.strip().lower() == email.strip().lower():
        return "Password must not be the same as the email."
    return None
