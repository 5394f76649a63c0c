"""Who is calling: ``CurrentUser`` accepts this API's access tokens and Supabase access tokens.

A third kind of bearer credential, an organization API key (``oak_…``), is resolved here too, but only
``CurrentCaller`` (the organization guard's, app/orgs/dependencies.py) accepts it: every other dependency answers
a key with 403 ``api_key_not_allowed``, so a route admits keys only by going through that guard."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.auth import identity, supabase
from app.auth.exceptions import (
    ApiKeyNotAllowedError,
    InactiveUserError,
    InvalidApiKeyError,
    MfaRequiredError,
    NotAuthenticatedError,
    NotOwnSessionError,
    SessionRevokedError,
)
from app.auth.tokens import TokenCache
from app.core import security
from app.core.context import RequestContext, client_ip
from app.core.db import utcnow
from app.core.errors import Forbidden
from app.core.raises import raises
from app.core.settings import SettingsDep
from app.orgs import policy
from app.state import AppState, state_of
from app.users.models import UserRow

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
    user: UserRow  # for an API key: its creator (the audit log's actor_id)
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


async def _own_principal(state: AppState, claims: security.AccessClaims) -> Principal:
    found = await identity.session_user(state.data, session_id=claims.session_id, user_id=claims.user_id)
    if found is None:
        raise SessionRevokedError()
    user, session = found
    if not user.is_active:  # first: deactivation also ends the sessions, and the answer names the cause
        raise InactiveUserError()
    now = utcnow()
    if session.revoked_at is not None or session.expires_at <= now:
        raise SessionRevokedError()
    if now - session.last_used_at >= LAST_USED_RESOLUTION:
        await identity.touch_session(state.data, claims.session_id, now)
    return Principal(user=user, session_id=claims.session_id, aal=session.aal)


async def _key_principal(state: AppState, token: str) -> Principal:
    """An organization API key: format and tag checked without the database (a guessed or mistyped key costs no
    query), then one lookup by its prefix that also reads the creator's current role, and a constant-time
    comparison of the stored HMAC. Every way a key dies answers the same 401 ``invalid_api_key``."""
    settings = state.settings
    prefix = security.parse_api_key(settings, token)
    if prefix is None:
        raise InvalidApiKeyError()
    found = await state.data.one(identity.API_KEY, prefix=prefix)
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
        await identity.touch_api_key(state.data, key.id, now, now - LAST_USED_RESOLUTION)
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


@raises(TokenCache.verify)  # called through the app's state, which the error analysis does not follow
async def _resolve_token(request: Request, token: str | None) -> Principal:
    if not token:
        raise NotAuthenticatedError()
    state = state_of(request.app)
    if token.startswith(security.API_KEY_PREFIX):
        principal = await _key_principal(state, token)
        request.state.user_id = principal.user.id
        request.state.principal = principal
        return principal
    verified = await state.tokens.verify(token, state.jwks)
    if verified.own is not None:
        principal = await _own_principal(state, verified.own)
    else:
        assert verified.supabase is not None
        context = RequestContext(ip_address=client_ip(request), user_agent=request.headers.get("user-agent"))
        user = await supabase.authenticate(state, verified.supabase, context)
        if not user.is_active:
            raise InactiveUserError()
        asserted = verified.supabase
        principal = Principal(user=user, session_id=None, aal=asserted.aal, issued_at=asserted.issued_at)
    request.state.user_id = principal.user.id
    request.state.principal = principal
    return principal


async def resolve_principal(request: Request, token: str | None) -> Principal:
    return await _resolve(request, token)


class _CallerScheme(OAuth2PasswordBearer):
    """The bearer scheme (what OpenAPI documents, as ``oauth2_scheme``) that also resolves the caller.

    FastAPI 0.165 does work for every level of dependencies on every request (cache keys, scopes, parameter
    extraction); a scheme below the caller's dependency was a second level on almost every request (what that
    costs: docs/SCALING.md, "Framework internals, measured")."""

    def __init__(self) -> None:
        super().__init__(tokenUrl=TOKEN_URL, auto_error=False)
        self.scheme_name = oauth2_scheme.scheme_name  # one scheme in the OpenAPI document

    async def bearer_token(self, request: Request) -> str | None:
        return await OAuth2PasswordBearer.__call__(self, request)


class _PrincipalScheme(_CallerScheme):
    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return await _resolve(request, await self.bearer_token(request))


class _UserScheme(_CallerScheme):
    async def __call__(self, request: Request) -> UserRow:  # type: ignore[override]
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


async def current_superuser(
    principal: Annotated[Principal, Depends(current_principal)], settings: SettingsDep
) -> UserRow:
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
CurrentUser = Annotated[UserRow, Depends(current_user)]
Superuser = Annotated[UserRow, Depends(current_superuser)]
