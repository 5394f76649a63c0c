"""Who is calling: ``CurrentUser`` accepts this API's access tokens and Supabase access tokens."""

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
    InactiveUserError,
    InvalidAccessTokenError,
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
from app.users.models import User

LAST_USED_RESOLUTION = timedelta(minutes=1)

TOKEN_URL = "/api/v1/auth/token"  # where Swagger UI's Authorize button logs in
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


@dataclass(slots=True)
class Principal:
    user: User
    session_id: uuid.UUID | None  # this API's session; None for Supabase tokens
    # The assurance level: of this API's session (read fresh with it, so a session raised to aal2 by confirming
    # MFA counts at once), or the Supabase token's own ``aal`` claim.
    aal: str = "aal1"
    # When a Supabase token was issued (``iat``): deleting the account needs a recent one. None for own tokens.
    issued_at: datetime | None = None

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


async def _resolve(request: Request, token: str | None) -> Principal:
    """The caller, read fresh on every request outside the request's transaction (app/auth/identity.py);
    resolved once per request however many dependencies ask."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    if not token:
        raise NotAuthenticatedError()
    settings: Settings = request.app.state.settings
    verified = verified_tokens(request)
    if verified.get(token) is not None or is_own_token(settings, token):
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


current_principal = _PrincipalScheme()
current_user = _UserScheme()


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
OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
OwnPrincipal = Annotated[Principal, Depends(own_principal)]  # sessions of Supabase users are Supabase's
CurrentUser = Annotated[User, Depends(current_user)]
Superuser = Annotated[User, Depends(current_superuser)]
