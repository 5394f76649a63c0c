"""A small per-process memory of tokens whose signature and claims already verified.

A token's signature and claims never change, so each is verified once: pyjwt's checks cost more than the
rest of a cheap request. Only tokens that verified are added (garbage cannot fill it), the oldest entry goes
first, and expiry is checked on every use. Nothing about a *session* is kept here: revocation is decided by
the database on every request (docs/SCALING.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")

VERIFIED_TOKENS_MAX = 4096  # a few MB per process at most


class VerifiedTokens(Generic[T]):
    def __init__(self, size: int = VERIFIED_TOKENS_MAX) -> None:
        self.size = size
        self._entries: dict[str, tuple[T, datetime]] = {}

    def get(self, token: str) -> tuple[T, datetime] | None:
        """(what the verification gave, until when it holds), or None for a token not seen yet."""
        return self._entries.get(token)

    def add(self, token: str, value: T, valid_until: datetime) -> None:
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[token] = (value, valid_until)
