"""Who is calling: ``CurrentUser`` accepts this API's access tokens and Supabase access tokens.

A third kind of bearer credential, an organization API key (``oak_…``), is resolved here too, but only
``CurrentCaller`` (the organization guard's, app/orgs/dependencies.py) accepts it: every other dependency answers
a key with 403 ``api_key_not_allowed``, so a route admits keys only by going through that guard."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.auth import supabase
from app.auth.exceptions import (
    AccessTokenExpiredError,
    ApiKeyNotAllowedError,
    InactiveUserError,
    InvalidAccessTokenError,
    InvalidApiKeyError,
    MfaRequiredError,
    NotAuthenticatedError,
    NotOwnSessionError,
    SessionRevokedError,
)
from app.auth.identity import IdentityStore
from app.core import security
from app.core.db import utcnow
from app.core.errors import Forbidden
from app.core.settings import Settings, SettingsDep
from app.core.token_cache import VerifiedTokens
from app.orgs import policy
from app.users.models import User

LAST_USED_RESOLUTION = timedelta(minutes=1)

TOKEN_URL = "/api/v1/auth/token"  # where Swagger UI's Authorize button logs in
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


@dataclass(frozen=True, slots=True)
class ApiKeyCaller:
    """An organization API key acting: its organization and role (the key's, never above its creator's)."""

    id: uuid.UUID
    org_id: uuid.UUID
    role: str
    name: str


@dataclass(slots=True)
class Principal:
    user: User  # for an API key: its creator (the audit log's actor_id)
    session_id: uuid.UUID | None  # this API's session; None for Supabase tokens and API keys
    # The assurance level: of this API's session (read fresh with it, so a session raised to aal2 by confirming
    # MFA counts at once), or the Supabase token's own ``aal`` claim. A key has none (it is not a person).
    aal: str = "aal1"
    # When a Supabase token was issued (``iat``): deleting the account needs a recent one. None for own tokens.
    issued_at: datetime | None = None
    api_key: ApiKeyCaller | None = None

    @property
    def has_mfa(self) -> bool:
        return self.aal == "aal2"


def is_own_token(settings: Settings, token: str) -> bool:
    """Decided from the header and the issuer alone, never by trying every verifier."""
    try:
        header, claims = supabase.peek(token)  # unverified, cheap: routing only
    except InvalidAccessTokenError:
        return True  # not a JWT at all: our verifier gives the precise 401
    return header.get("alg") == security.JWT_ALGORITHM and claims.get("iss") == settings.JWT_ISSUER


def verified_tokens(request: Request) -> VerifiedTokens[security.AccessClaims]:
    """The app's cache of own tokens (per app: two apps in one process may hold different SECRET_KEYs)."""
    cache: VerifiedTokens[security.AccessClaims] | None = getattr(request.app.state, "verified_tokens", None)
    if cache is None:
        cache = request.app.state.verified_tokens = VerifiedTokens()
    return cache


def _own_claims(
    settings: Settings, token: str, verified: VerifiedTokens[security.AccessClaims] | None
) -> security.AccessClaims:
    known = verified.get(token) if verified is not None else None
    if known is not None:
        claims, valid_until = known
        if valid_until <= utcnow():
            raise AccessTokenExpiredError()
        return claims
    try:
        claims = security.decode_access_token(settings, token)
    except jwt.ExpiredSignatureError as exc:
        raise AccessTokenExpiredError() from exc
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidAccessTokenError() from exc
    if verified is not None:
        verified.add(token, claims, claims.expires_at)
    return claims


def identity_store(request: Request) -> IdentityStore:
    store: IdentityStore = request.app.state.identity
    return store


async def _own_principal(
    store: IdentityStore,
    settings: Settings,
    token: str,
    verified: VerifiedTokens[security.AccessClaims] | None = None,
) -> Principal:
    claims = _own_claims(settings, token, verified)
    found = await store.session_user(session_id=claims.session_id, user_id=claims.user_id)
    if found is None:
        raise SessionRevokedError()
    user, state = found
    if not user.is_active:  # first: deactivation also ends the sessions, and the answer names the cause
        raise InactiveUserError()
    now = utcnow()
    if state.revoked_at is not None or state.expires_at <= now:
        raise SessionRevokedError()
    if now - state.last_used_at >= LAST_USED_RESOLUTION:
        await store.touch_session(claims.session_id, now)
    return Principal(user=user, session_id=claims.session_id, aal=state.aal)


async def _key_principal(store: IdentityStore, settings: Settings, token: str) -> Principal:
    """An organization API key: format and tag checked without the database (a guessed or mistyped key costs no
    query), then one lookup by its prefix that also reads the creator's current role, and a constant-time
    comparison of the stored HMAC. Every way a key dies answers the same 401 ``invalid_api_key``."""
    prefix = security.parse_api_key(settings, token)
    found = await store.api_key(prefix) if prefix is not None else None
    if found is None:
        raise InvalidApiKeyError()
    user, key = found
    now = utcnow()
    if (
        not security.api_key_matches(settings, token, key.secret_hash)
        or key.revoked_at is not None
        or (key.expires_at is not None and key.expires_at <= now)
        or not user.is_active
        or not policy.keeps_api_keys(key.creator_role)
    ):
        raise InvalidApiKeyError()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await store.touch_api_key(key.id, now, now - LAST_USED_RESOLUTION)
    caller = ApiKeyCaller(id=key.id, org_id=key.org_id, role=key.role, name=key.name)
    return Principal(user=user, session_id=None, api_key=caller)


async def _resolve(request: Request, token: str | None, *, keys: bool = False) -> Principal:
    """The caller, read fresh on every request outside the request's transaction (app/auth/identity.py);
    resolved once per request however many dependencies ask. An API key only where ``keys`` (403 elsewhere)."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is None:
        known = await _resolve_token(request, token)
    if known.api_key is not None and not keys:
        raise ApiKeyNotAllowedError()
    return known


async def _resolve_token(request: Request, token: str | None) -> Principal:
    if not token:
        raise NotAuthenticatedError()
    settings: Settings = request.app.state.settings
    verified = verified_tokens(request)
    if token.startswith(security.API_KEY_PREFIX):
        principal = await _key_principal(identity_store(request), settings, token)
    elif verified.get(token) is not None or is_own_token(settings, token):
        principal = await _own_principal(identity_store(request), settings, token, verified)
    else:
        user, identity = await supabase.authenticate(request, token)
        if not user.is_active:
            raise InactiveUserError()
        principal = Principal(user=user, session_id=None, aal=identity.aal, issued_at=identity.issued_at)
    request.state.user_id = principal.user.id
    request.state.principal = principal
    return principal


async def resolve_principal(request: Request, token: str | None) -> Principal:
    return await _resolve(request, token)


class _CallerScheme(OAuth2PasswordBearer):
    """The bearer scheme (what OpenAPI documents, as ``oauth2_scheme``) that also resolves the caller.

    FastAPI 0.165 does work for every level of dependencies on every request (cache keys, scopes, parameter
    extraction); a scheme below the caller's dependency was a second level on almost every request. Together
    with the routes' prefix check, ``GET /users/me`` made 19 % fewer function calls (docs/SCALING.md)."""

    def __init__(self) -> None:
        super().__init__(tokenUrl=TOKEN_URL, auto_error=False)
        self.scheme_name = oauth2_scheme.scheme_name  # one scheme in the OpenAPI document

    async def bearer_token(self, request: Request) -> str | None:
        return await OAuth2PasswordBearer.__call__(self, request)


class _PrincipalScheme(_CallerScheme):
    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return await _resolve(request, await self.bearer_token(request))


class _UserScheme(_CallerScheme):
    async def __call__(self, request: Request) -> User:  # type: ignore[override]
        return (await _resolve(request, await self.bearer_token(request))).user


class _KeyCallerScheme(_CallerScheme):
    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return await _resolve(request, await self.bearer_token(request), keys=True)


current_principal = _PrincipalScheme()
current_user = _UserScheme()
current_caller = _KeyCallerScheme()  # also an organization API key: the organization guard's alone


async def own_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """A caller with one of this API's sessions; Supabase tokens get 400 ``not_own_session``."""
    if principal.session_id is None:
        raise NotOwnSessionError()
    return principal


async def current_superuser(principal: Annotated[Principal, Depends(current_principal)], settings: SettingsDep) -> User:
    """The one gate of /admin: a superuser, and with ``ADMIN_REQUIRE_MFA`` one whose token is aal2."""
    if not principal.user.is_superuser:
        raise Forbidden("Superuser privileges are required.")
    if settings.ADMIN_REQUIRE_MFA and not principal.has_mfa:
        raise MfaRequiredError()
    return principal.user


async def optional_principal(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal | None:
    """The caller when an access token is sent (an invalid one is still a 401), else None: for the few
    operations that work with or without one (logout by refresh token, confirming an email change)."""
    return await _resolve(request, token) if token else None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentCaller = Annotated[Principal, Depends(current_caller)]  # a person or an organization API key
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
OwnPrincipal = Annotated[Principal, Depends(own_principal)]  # sessions of Supabase users are Supabase's
CurrentUser = Annotated[User, Depends(current_user)]
Superuser = Annotated[User, Depends(current_superuser)]
