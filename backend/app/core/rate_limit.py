"""Rate limits: the one table of limits, and the pure ASGI middleware that applies it.

Algorithm: the fixed window of the limits library (a counter per key that expires one period after its first
hit). Storage: ``memory://`` (the default) keeps the counters in this process (MemoryCounters, below);
``redis://`` uses limits' *async* Redis storage, shared by every worker and instance, so no storage call
blocks the event loop. One storage round trip per limit per request (``INCRBY`` + ``EXPIRE`` in one Lua
script); a blocked request costs one more (the key's TTL, for ``Retry-After``). When the storage fails,
requests are served unlimited (fail open) and a warning is logged.

Keys: the client IP (``scope["state"]["client_ip"]``, set by RequestContextMiddleware behind trusted proxies
only; IPv6 grouped by /64), the caller (the user: the subject of a bearer token that verifies in the app's token
cache, app/auth/tokens.py: this API's tokens, Supabase HS256 tokens, and any token authentication verified before;
on /auth/mfa/verify, the user an authentic ``mfa_token`` of the body names; or the organization API key: an
``oak_`` key whose HMAC tag checks out, counted per key by its prefix; anything else counts as anonymous, i.e.
per IP), and, for login and password-reset requests, the email of the body (hashed; the body is read once and
replayed to the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, cast

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from starlette.datastructures import Headers, MutableHeaders
from starlette.formparsers import FormParser, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import security
from app.core.emails import normalize_email
from app.core.errors import error_response
from app.core.settings import Settings

if TYPE_CHECKING:
    from app.auth.tokens import TokenCache

logger = logging.getLogger("app.rate_limit")


class KeyKind(StrEnum):
    IP = "ip"
    USER = "user"  # the verified caller (user, or API key); per IP when anonymous
    EMAIL = "email"  # the email in the request body (JSON field, or form field for /auth/token)


@dataclass(frozen=True, slots=True)
class Limit:
    bucket: str  # the counter's name: routes naming the same bucket share it
    setting: str  # the Settings field holding "N/period"
    key: KeyKind


@dataclass(frozen=True, slots=True)
class Rule:
    limits: tuple[Limit, ...]
    email_field: str | None = None  # body field read for KeyKind.EMAIL
    mfa_token_field: str | None = None  # body field whose authentic mfa token names the user for KeyKind.USER


_LOGIN = (Limit("login", "RATE_LIMIT_LOGIN", KeyKind.IP), Limit("login-email", "RATE_LIMIT_LOGIN_EMAIL", KeyKind.EMAIL))
_MFA = (Limit("mfa", "RATE_LIMIT_MFA", KeyKind.IP), Limit("mfa-user", "RATE_LIMIT_MFA", KeyKind.USER))
_RESET_REQUEST = (
    Limit("reset", "RATE_LIMIT_EMAIL", KeyKind.IP),
    Limit("reset-email", "RATE_LIMIT_EMAIL", KeyKind.EMAIL),
)

# THE table: path under API_V1_PREFIX -> its limits (any method; "METHOD /path" for one method only, which
# wins over the path's own row). A path ending in "/" covers every path below it that has no row of its own.
# Every other path under the prefix gets DEFAULT_RULE; paths outside it (/health, /health/live, /docs, /redoc
# and their assets) are never limited.
RULES: dict[str, Rule] = {
    "/auth/login": Rule(_LOGIN, email_field="email"),
    "/auth/token": Rule(_LOGIN, email_field="username"),  # the OAuth2 form: same buckets as /auth/login
    "/auth/register": Rule((Limit("register", "RATE_LIMIT_REGISTER", KeyKind.IP),)),
    "/auth/refresh": Rule((Limit("refresh", "RATE_LIMIT_REFRESH", KeyKind.IP),)),
    "/auth/password": Rule(
        (
            Limit("password", "RATE_LIMIT_PASSWORD", KeyKind.IP),
            Limit("password-user", "RATE_LIMIT_PASSWORD", KeyKind.USER),
        )
    ),
    "/auth/password-reset/request": Rule(_RESET_REQUEST, email_field="email"),
    "/auth/password-reset/": Rule((Limit("reset-confirm", "RATE_LIMIT_PASSWORD", KeyKind.IP),)),
    "/auth/verify-email/request": Rule(
        (Limit("verify", "RATE_LIMIT_EMAIL", KeyKind.IP), Limit("verify-user", "RATE_LIMIT_EMAIL", KeyKind.USER))
    ),
    "/auth/verify-email/": Rule((Limit("verify-confirm", "RATE_LIMIT_EMAIL", KeyKind.IP),)),
    # Mails to an address of the caller's choosing, and checks the current password: like a reset request.
    "/users/me/email": Rule(
        (
            Limit("email-change", "RATE_LIMIT_EMAIL", KeyKind.IP),
            Limit("email-change-user", "RATE_LIMIT_EMAIL", KeyKind.USER),
        )
    ),
    "/users/me/email/confirm": Rule((Limit("email-change-confirm", "RATE_LIMIT_EMAIL", KeyKind.IP),)),
    # Checks the current password (like /auth/password); the user's whole account is at stake.
    "DELETE /users/me": Rule(
        (
            Limit("account-delete", "RATE_LIMIT_PASSWORD", KeyKind.IP),
            Limit("account-delete-user", "RATE_LIMIT_PASSWORD", KeyKind.USER),
        )
    ),
    # Reads the user's whole history (every ledger row, every audit event): a few per minute are plenty.
    "GET /users/me/export": Rule((Limit("export", "RATE_LIMIT_EXPORT", KeyKind.USER),)),
    "/auth/mfa/verify": Rule(_MFA, mfa_token_field="mfa_token"),
    "/auth/mfa/": Rule(_MFA),  # enrol, confirm, disable: the same buckets (each takes a code or a password)
}
DEFAULT_RULE = Rule((Limit("default", "RATE_LIMIT_DEFAULT", KeyKind.USER),))


@dataclass(frozen=True, slots=True)
class _Compiled:
    limits: tuple[tuple[Limit, RateLimitItem], ...]
    email_field: str | None
    mfa_token_field: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int  # of the most constrained limit
    remaining: int
    retry_after: int  # seconds; 0 when allowed


class Counters(Protocol):
    """What the limiter needs of a store (limits' async storages have it)."""

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int: ...
    async def get_expiry(self, key: str) -> float: ...
    async def reset(self) -> int | None: ...


class MemoryCounters:
    """Fixed-window counters in this process: O(1) per hit, expired windows swept at most every few seconds.

    Not limits' ``async+memory://`` storage: it starts a task scanning every key on each hit, a cost that grows
    with the number of live keys (measured in docs/SECURITY_HEADERS.md), which many clients would turn into a DoS.
    No lock: nothing awaits between reading and writing a counter, so the event loop makes it atomic.
    """

    SWEEP_SECONDS = 5.0

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._next_sweep = 0.0

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        if now >= self._next_sweep:
            self._windows = {k: window for k, window in self._windows.items() if window[1] > now}
            self._next_sweep = now + self.SWEEP_SECONDS
        count, expires = self._windows.get(key, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + expiry
        self._windows[key] = (count + amount, expires)
        return count + amount

    async def get_expiry(self, key: str) -> float:
        return self._windows.get(key, (0, time.time()))[1]

    async def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        return count

    def __len__(self) -> int:
        return len(self._windows)


def storage_uri(uri: str) -> str:
    """The async variant of a storage URI: memory:// -> async+memory://, redis://… -> async+redis://…"""
    return uri if uri.startswith("async+") else f"async+{uri}"


class RateLimiter:
    """Fixed-window counters (MemoryCounters, or limits' async Redis storage), failing open when the storage
    is unreachable. The Redis client is built again if a later call runs on another event loop: an async
    connection pool cannot cross loops. An unknown storage scheme fails at start."""

    def __init__(self, uri: str, *, key_prefix: str = "ratelimit", timeout: float = 0.5, cooldown: float = 5.0) -> None:
        self.uri = storage_uri(uri)
        self.is_memory = self.uri.startswith("async+memory")
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.cooldown = cooldown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        # Built now, outside any event loop: building the Redis client imports redis.asyncio (about a second
        # here), which must not stall the first request. It binds to a loop only when it first connects.
        self._storage: Counters | None = self._make_storage()

    def _make_storage(self) -> Counters:
        if self.is_memory:
            return MemoryCounters()
        options: dict[str, Any] = {
            "implementation": "redispy",
            "key_prefix": self.key_prefix,
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
        }
        return cast(Counters, storage_from_string(self.uri, **options))

    def storage(self) -> Counters:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if self._storage is None or (loop is not self._loop and not self.is_memory):
            self._storage = self._make_storage()
            self._loop = loop
        return self._storage

    async def hit(self, items: list[tuple[RateLimitItem, str]]) -> Decision | None:
        """Count one request against each (limit, key) in turn, stopping at the first one exceeded (so a blocked
        IP creates no per-email counters); None when the storage is down (fail open)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            storage = self.storage()
            tightest: tuple[RateLimitItem, int] | None = None
            retry_after = 0
            for item, key in items:
                count = await storage.incr(key, item.get_expiry())
                remaining = item.amount - count
                if tightest is None or remaining < tightest[1]:
                    tightest = (item, remaining)
                if remaining < 0:
                    expiry = await storage.get_expiry(key)
                    retry_after = max(math.ceil(expiry - time.time()), 1)
                    break
        except Exception as exc:  # any storage failure: serve rather than answer 500
            self._down_until = time.monotonic() + self.cooldown
            logger.warning(
                "rate-limit storage unavailable (%s: %s); serving without limits for %.0f s",
                type(exc).__name__,
                exc,
                self.cooldown,
            )
            return None
        if tightest is None:
            return None
        item, remaining = tightest
        return Decision(retry_after == 0, item.amount, max(remaining, 0), retry_after)

    async def reset(self) -> None:
        """Forget every counter (tests, operators)."""
        await self.storage().reset()

    async def aclose(self) -> None:
        storage, self._storage = self._storage, None
        bridge = getattr(storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            with contextlib.suppress(Exception):  # closing a broken pool is best effort
                await client.aclose()


def ip_key(ip: str | None) -> str:
    """IPv6 clients are grouped by /64: one host usually owns a whole /64."""
    if not ip:
        return "unknown"
    if ":" in ip:
        try:
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False).network_address) + "/64"
        except ValueError:
            return ip
    return ip


def email_key(email: str) -> str | None:
    """The counter key of an address: its stored form (app/core/emails.py), so that no other spelling of it
    gets a fresh counter, hashed (raw addresses never land in the counter store). None when the text is no
    address: the app refuses that body without any work."""
    try:
        normalized = normalize_email(email)
    except ValueError:
        return None
    return hashlib.sha256(normalized.encode()).hexdigest()[:32]


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _single(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def field_from_body(headers: Headers, body: bytes, field: str) -> str | None:
    """The field as the app will read it: JSON (last duplicate wins, like json.loads), or the form parser the
    framework itself uses; None unless it is a non-blank string."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    value: Any = None
    try:
        if content_type == "application/x-www-form-urlencoded":
            value = (await FormParser(headers, _single(body)).parse()).get(field)
        elif content_type == "multipart/form-data":
            form = await MultiPartParser(headers, _single(body)).parse()
            value = form.get(field)
            await form.close()
        else:
            data = json.loads(body)
            value = data.get(field) if isinstance(data, dict) else None
    except Exception:  # a body the app will refuse (422) anyway
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return value


async def email_from_body(headers: Headers, body: bytes, field: str) -> str | None:
    value = await field_from_body(headers, body, field)
    return None if value is None else email_key(value)


async def buffer_body(receive: Receive, max_size: int) -> tuple[bytes | None, Receive]:
    """Read the whole body (None if over max_size or cut short) and a receive that replays it to the app."""
    messages: deque[Message] = deque()
    chunks: list[bytes] = []
    size = 0
    complete = False
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_size:
            break
        chunks.append(chunk)
        if not message.get("more_body", False):
            complete = True
            break

    async def replay() -> Message:
        if messages:
            return messages.popleft()
        return await receive()

    return (b"".join(chunks) if complete else None), replay


class RateLimitMiddleware:
    """Pure ASGI: looks the path up in RULES, counts the request, answers 429 or adds the X-RateLimit headers.

    Sits inside CORS (so a 429 still carries the CORS headers a browser needs to read it) and inside
    RequestContextMiddleware (which sets the client IP and adds the security headers to the 429 too).
    """

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter, tokens: TokenCache) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.enabled = settings.RATE_LIMIT_ENABLED
        self.prefix = settings.API_V1_PREFIX
        self.max_body = settings.MAX_BODY_SIZE
        # Parsing here makes a malformed limit string fail at start, not on the first request.
        self.rules: dict[str, _Compiled] = {}
        self.method_rules: dict[tuple[str, str], _Compiled] = {}  # ("DELETE", "/api/v1/users/me")
        for key, rule in RULES.items():
            method, _, path = key.rpartition(" ")
            if method:
                self.method_rules[(method, f"{self.prefix}{path}")] = self._compile(rule)
            else:
                self.rules[f"{self.prefix}{path}"] = self._compile(rule)
        self.prefix_rules = [(path, rule) for path, rule in self.rules.items() if path.endswith("/")]
        self.default = self._compile(DEFAULT_RULE)
        self.tokens = tokens

    def _compile(self, rule: Rule) -> _Compiled:
        items = tuple((limit, parse(getattr(self.settings, limit.setting))) for limit in rule.limits)
        return _Compiled(items, rule.email_field, rule.mfa_token_field)

    def _mfa_user(self, token: str | None) -> str | None:
        """The user of an authentic mfa token (HMAC checked, no database); a forged one counts per IP only."""
        parts = security.parse_mfa_token(self.settings, token) if token else None
        return f"user:{parts.user_id}" if parts else None

    def _caller(self, headers: Headers) -> str | None:
        """The counter identity of a bearer credential that verifies here: ``user:<id>`` for a token (app/auth/
        tokens.py, the cache authentication uses), ``key:<prefix>`` for an organization API key whose tag checks
        out. A key counts per key whatever its state: whether it is revoked is the app's question (one lookup)."""
        token = bearer_token(headers)
        if token is None or len(token) > 4096:
            return None
        if token.startswith(security.API_KEY_PREFIX):
            prefix = security.parse_api_key(self.settings, token)
            return None if prefix is None else f"key:{prefix}"
        subject = self.tokens.subject(token)
        return None if subject is None else f"user:{subject}"

    def rule_for(self, path: str) -> _Compiled | None:
        rule = self.rules.get(path)
        if rule is not None and not path.endswith("/"):
            return rule
        if not path.startswith(self.prefix + "/"):
            return None
        for prefix, prefix_rule in self.prefix_rules:
            if path.startswith(prefix):
                return prefix_rule
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        rule = self.method_rules.get((scope["method"], scope["path"])) or self.rule_for(scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
            return

        headers = Headers(scope=scope)
        ip = ip_key(scope.get("state", {}).get("client_ip"))
        caller: str | None = None
        email: str | None = None
        if rule.email_field is not None or rule.mfa_token_field is not None:
            body, receive = await buffer_body(receive, self.max_body)
            if body is not None and rule.email_field is not None:
                email = await email_from_body(headers, body, rule.email_field)
            if body is not None and rule.mfa_token_field is not None:
                caller = self._mfa_user(await field_from_body(headers, body, rule.mfa_token_field))
        items: list[tuple[RateLimitItem, str]] = []
        for limit, item in rule.limits:
            if limit.key is KeyKind.EMAIL:
                if email is None:
                    continue  # no usable email: the app refuses the body (422) without any work
                identity = f"email:{email}"
            elif limit.key is KeyKind.USER:
                if caller is None:
                    caller = self._caller(headers) or ""
                identity = caller or f"ip:{ip}"
            else:
                identity = f"ip:{ip}"
            items.append((item, item.key_for(limit.bucket, identity)))

        decision = await self.limiter.hit(items)
        if decision is None:
            await self.app(scope, receive, send)
            return
        limit_value = str(decision.limit).encode()
        if not decision.allowed:
            response = error_response(
                429,
                f"Too many requests; retry in {decision.retry_after} seconds.",
                "rate_limited",
                {
                    "Retry-After": str(decision.retry_after),
                    "X-RateLimit-Limit": str(decision.limit),
                    "X-RateLimit-Remaining": "0",
                },
            )
            await response(scope, receive, send)
            return
        remaining = str(decision.remaining).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = MutableHeaders(scope=message).raw
                raw.append((b"x-ratelimit-limit", limit_value))
                raw.append((b"x-ratelimit-remaining", remaining))
            await send(message)

        await self.app(scope, receive, send_with_headers)
