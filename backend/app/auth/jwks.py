"""The Supabase project's signing keys (JWKS), fetched with an async HTTP client and cached.

- The whole key set is cached for ``cache_seconds`` (SUPABASE_JWKS_CACHE_SECONDS).
- A token naming a ``kid`` the fresh cache does not hold triggers a refetch (key rotation), at most once per
  ``min_refetch_seconds`` (SUPABASE_JWKS_MIN_REFETCH_SECONDS): a flood of made-up kids cannot hammer Supabase.
- Concurrent misses share one fetch (a lock plus a fetch counter: whoever waited behind a fetch uses its result).
- When the keys cannot be fetched and no fresh set is cached, ``JwksUnavailableError`` (503) is raised: a token
  is never let through unchecked, and after a failure the next attempt waits a short backoff.
- Only asymmetric signing keys are kept, each pinned to one algorithm: EC P-256 -> ES256, RSA -> RS256. A
  symmetric (``oct``) key in the set is ignored, so the JWKS can never be used as an HMAC secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from app.auth.exceptions import JwksUnavailableError

logger = logging.getLogger("app.auth.jwks")

FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024
MAX_FAILURE_BACKOFF_SECONDS = 5.0
SUPPORTED: dict[tuple[object, object], str] = {("EC", "P-256"): "ES256", ("RSA", None): "RS256"}


class JwksFetchError(Exception):
    """The key set could not be fetched or parsed (logged, answered as 503)."""


def parse_jwks(data: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by kid; anything unsupported is skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksFetchError("the document has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict):
            continue
        kid, kty = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        algorithm = SUPPORTED.get((kty, entry.get("crv") if kty == "EC" else None))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=algorithm)
        except jwt.PyJWTError:
            logger.warning("skipping an unreadable key in the JWKS (kid=%s)", kid)
    return keys


class JwksClient:
    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refetch_seconds: float,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.failure_backoff_seconds = min(min_refetch_seconds, MAX_FAILURE_BACKOFF_SECONDS)
        self._http = http or httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._failed = False  # the last attempt failed
        self._fetches = 0  # attempts ended so far; waiters behind a fetch compare it to reuse the result
        self._lock: asyncio.Lock | None = None

    @property
    def fetch_count(self) -> int:
        return self._fetches

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self.cache_seconds

    async def get_key(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``; None when it is unknown even after the refetch the rules allow.

        Raises JwksUnavailableError when no fresh key set can be had.
        """
        now = self._clock()
        if self._fresh(now):
            key = self._keys.get(kid)
            if key is not None:
                return key
            if self._attempted_at is not None and now - self._attempted_at < self.min_refetch_seconds:
                return None  # unknown kid inside the refetch interval: no request to Supabase
        elif (
            self._failed and self._attempted_at is not None and now - self._attempted_at < self.failure_backoff_seconds
        ):
            raise self._unavailable()
        await self._refresh(seen=self._fetches)
        if self._failed or not self._fresh(self._clock()):
            raise self._unavailable()  # never a 401 for what may be a freshly rotated key
        return self._keys.get(kid)

    async def _refresh(self, *, seen: int) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fetches != seen:
                return  # a fetch ended while this caller waited: share its result
            try:
                keys = await self._fetch()
            except JwksFetchError as exc:
                self._failed = True
                logger.warning("cannot fetch the Supabase JWKS from %s: %s", self.url, exc)
            else:
                self._keys, self._fetched_at, self._failed = keys, self._clock(), False
            finally:
                self._fetches += 1
                self._attempted_at = self._clock()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            response = await self._http.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JwksFetchError(type(exc).__name__) from exc
        if response.status_code != 200:
            raise JwksFetchError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksFetchError("the document is too large")
        try:
            data = response.json()
        except ValueError as exc:
            raise JwksFetchError("the document is not JSON") from exc
        return parse_jwks(data)

    def _unavailable(self) -> JwksUnavailableError:
        retry = max(1, round(self.failure_backoff_seconds))
        return JwksUnavailableError(headers={"Retry-After": str(retry)})

    async def aclose(self) -> None:
        await self._http.aclose()
