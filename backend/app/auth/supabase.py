"""Supabase access tokens: verification and first-sight provisioning of the local user (docs/SUPABASE.md).

``app.auth.dependencies`` sends here every bearer token that is not this API's own (``is_own_token``). Until
a deployment configures Supabase (SUPABASE_JWT_SECRET, or SUPABASE_URL / SUPABASE_JWKS_URL) they are 401.

The verifier is chosen from the token header alone, each with one pinned algorithm:
- ``HS256``: the project's legacy JWT secret (SUPABASE_JWT_SECRET), ``algorithms=["HS256"]``;
- ``ES256`` / ``RS256``: the key named by ``kid`` in the project's JWKS (app.auth.jwks), with the algorithm of
  that key only; a token whose ``alg`` differs from its key's is refused (algorithm confusion);
- anything else (``none``, HS384, PS256, ...) is refused.
Then: ``exp`` (small leeway), ``iat``, ``aud`` = authenticated, ``iss`` = {SUPABASE_URL}/auth/v1 when
SUPABASE_URL is set, ``sub`` a UUID, ``role`` = authenticated, ``is_anonymous`` per SUPABASE_ALLOW_ANONYMOUS.
The hot path after decoding is one indexed query (``users.supabase_id``).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from app.audit import service as audit
from app.auth import service as auth_service
from app.auth.exceptions import (
    AccessTokenExpiredError,
    AccountDeletedError,
    AccountExistsError,
    AnonymousUserError,
    InvalidAccessTokenError,
)
from app.auth.identity import SUPABASE_CALLER, SUPABASE_DELETED_AT, SUPABASE_USER
from app.auth.jwks import JwksClient
from app.core.context import RequestContext
from app.core.data import Data, Statements, Tx
from app.core.emails import normalize_email
from app.core.settings import Settings
from app.state import AppState
from app.users import service as user_service
from app.users.models import UserRow

AUDIENCE = "authenticated"
USER_ROLE = "authenticated"
LEEWAY_SECONDS = 10
ASYMMETRIC_ALGORITHMS = frozenset({"ES256", "RS256"})
REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud"]
# Users without an email (phone sign-in, anonymous users) get an address that cannot exist (RFC 2606).
PLACEHOLDER_EMAIL_DOMAIN = "supabase.invalid"
MERGE_REVOKE_REASON = "supabase_merge"


@dataclass(frozen=True, slots=True)
class SupabaseIdentity:
    user_id: uuid.UUID  # the token's sub
    email: str | None  # normalized; None when the token carries none
    email_verified: bool
    full_name: str | None
    is_anonymous: bool
    issued_at: datetime  # iat: re-authentication (DELETE /users/me), tokens of deleted accounts
    aal: str = "aal1"  # Supabase's own assurance level claim: aal2 after its MFA step

    @property
    def local_email(self) -> str:
        return self.email or f"{self.user_id}@{PLACEHOLDER_EMAIL_DOMAIN}"


def create_jwks_client(settings: Settings) -> JwksClient | None:
    if not settings.SUPABASE_JWKS_URL:
        return None
    return JwksClient(
        settings.SUPABASE_JWKS_URL,
        cache_seconds=settings.SUPABASE_JWKS_CACHE_SECONDS,
        min_refetch_seconds=settings.SUPABASE_JWKS_MIN_REFETCH_SECONDS,
    )


# --- verification ---------------------------------------------------------------------------------------


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UNVERIFIED header and claims, only to route a token to its verifier (InvalidAccessTokenError if
    it is not a JWT). The stdlib parse is far cheaper than pyjwt's checked parse of a Supabase-sized token, and the
    verifier's ``jwt.decode`` then parses and checks everything again."""
    try:
        header_segment, payload_segment, _signature = token.split(".")
        parts = [
            json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
            for segment in (header_segment, payload_segment)
        ]
    except (ValueError, binascii.Error) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidAccessTokenError() from exc
    header, claims = parts
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidAccessTokenError()
    return header, claims


async def _verification_key(settings: Settings, jwks: JwksClient | None, token: str) -> tuple[Any, str]:
    """(key, its one algorithm) for this token, decided from its header alone."""
    header, _claims = peek(token)
    alg = header.get("alg")
    if alg == "HS256":
        if not settings.SUPABASE_JWT_SECRET:
            raise InvalidAccessTokenError()
        return settings.SUPABASE_JWT_SECRET, "HS256"
    if alg in ASYMMETRIC_ALGORITHMS:
        kid = header.get("kid")
        if jwks is None or not isinstance(kid, str) or not kid:
            raise InvalidAccessTokenError()
        key = await jwks.get_key(kid)  # JwksUnavailableError (503) when the keys cannot be had
        if key is None or key.algorithm_name != alg:
            raise InvalidAccessTokenError()
        return key, key.algorithm_name
    raise InvalidAccessTokenError()


def _decode(settings: Settings, token: str, key: Any, algorithm: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            issuer=settings.supabase_issuer,  # None (no SUPABASE_URL): iss is not checked
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AccessTokenExpiredError() from exc
    except jwt.PyJWTError as exc:
        raise InvalidAccessTokenError() from exc
    return claims


async def verify_token(settings: Settings, jwks: JwksClient | None, token: str) -> dict[str, Any]:
    """The verified claims of a Supabase access token, or a 401 (503 while the JWKS is unreachable)."""
    if not settings.supabase_enabled:
        raise InvalidAccessTokenError()
    key, algorithm = await _verification_key(settings, jwks, token)
    return _decode(settings, token, key, algorithm)


def verify_hs256(settings: Settings, token: str) -> dict[str, Any] | None:
    """The claims of an HS256 token verified with the same checks as verify_token, when that needs no key fetch
    (SUPABASE_JWT_SECRET set, ``alg`` HS256); None when it would (or Supabase is off). Raises like verify_token."""
    if not settings.supabase_enabled or not settings.SUPABASE_JWT_SECRET or peek(token)[0].get("alg") != "HS256":
        return None
    return _decode(settings, token, settings.SUPABASE_JWT_SECRET, "HS256")


def _email_verified(claims: dict[str, Any]) -> bool:
    metadata = claims.get("user_metadata")
    if isinstance(metadata, dict) and metadata.get("email_verified") is True:
        return True
    return bool(claims.get("email_confirmed_at"))


def _email(value: Any) -> str | None:
    """The token's address in its stored form; None when it carries none, or text that is no address."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return normalize_email(value)
    except ValueError:
        return None


def _full_name(claims: dict[str, Any]) -> str | None:
    metadata = claims.get("user_metadata")
    if not isinstance(metadata, dict):
        return None
    for field in ("full_name", "name"):
        value = metadata.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()[:255]
    return None


def _issued_at(value: Any) -> datetime:
    """``iat`` (required, so present; pyjwt has checked it is a number)."""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidAccessTokenError() from exc


def identity_from_claims(settings: Settings, claims: dict[str, Any]) -> SupabaseIdentity:
    """Only user tokens pass: role ``authenticated``, a UUID ``sub``, anonymous users only when allowed."""
    if claims.get("role") != USER_ROLE:
        raise InvalidAccessTokenError("Only Supabase user access tokens are accepted.")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise InvalidAccessTokenError() from exc
    is_anonymous = claims.get("is_anonymous") is True
    if is_anonymous and not settings.SUPABASE_ALLOW_ANONYMOUS:
        raise AnonymousUserError()
    email = _email(claims.get("email"))
    return SupabaseIdentity(
        user_id=user_id,
        email=email,
        email_verified=email is not None and _email_verified(claims),
        full_name=_full_name(claims),
        is_anonymous=is_anonymous,
        aal="aal2" if claims.get("aal") == "aal2" else "aal1",
        issued_at=_issued_at(claims.get("iat")),
    )


# --- the local user ---------------------------------------------------------------------------------------


async def _merge(tx: Tx, identity: SupabaseIdentity) -> UserRow:
    """The token's email belongs to an account of its own: link it only on a verified email, else 409."""
    existing = await user_service.find_user_by_email(tx, identity.local_email)
    if existing is not None and existing.supabase_id == identity.user_id:
        return existing  # a concurrent first request of the same Supabase user linked it
    if existing is None or existing.supabase_id is not None or not identity.email_verified:
        raise AccountExistsError()
    # An own account whose email was never verified may have been registered by someone else ahead of the
    # mailbox's owner (account pre-hijacking): the Supabase side proved the mailbox, so that account
    # becomes Supabase-only: its password is dropped and its sessions end.
    unproven = not existing.is_verified
    linked = await user_service.link_supabase_identity(
        tx, user_id=existing.id, supabase_id=identity.user_id, drop_password=unproven
    )
    if linked is None:
        return await _local_user(tx, identity)  # AccountExistsError: linked to another Supabase user meanwhile
    if unproven:
        await auth_service.revoke_user_sessions(tx, user_id=existing.id, reason=MERGE_REVOKE_REASON)
    await audit.record(
        tx,
        "user.supabase_linked",
        actor_id=existing.id,
        subject_user_id=existing.id,
        details={"supabase_id": str(identity.user_id), "password_dropped": unproven},
    )
    return linked


async def _local_user(tx: Tx, identity: SupabaseIdentity) -> UserRow:
    user = await tx.one(SUPABASE_USER, supabase_id=identity.user_id)
    if user is None:
        raise AccountExistsError()
    return user


def _needs_write(user: UserRow, identity: SupabaseIdentity) -> bool:
    """The token asserts a verified email the local row does not have yet (resolve_user records it)."""
    return identity.email_verified and not user.is_verified and user.email == identity.email


async def resolve_user(tx: Tx, identity: SupabaseIdentity, known: UserRow | None) -> UserRow:
    """Write what a verified identity needs, in ``tx``: a newly verified email of ``known`` (the local user the
    caller read before the transaction, None when there was none); else the user created on first sight
    (id = sub), found when a concurrent first request created it, or linked on a verified merge."""
    if known is not None:  # confirmed in Supabase since the first sight: one write, once
        user = await user_service.mark_verified(tx, user_id=known.id, email=known.email)
        if user is not None:
            return user
        user = await tx.one(SUPABASE_USER, supabase_id=identity.user_id)
        if user is not None:
            return user  # its address changed meanwhile: nothing to record
        await _refuse_deleted(tx, identity)  # deleted meanwhile: provisioned again only by a newer token
    user = await user_service.provision_supabase_user(
        tx,
        supabase_id=identity.user_id,
        email=identity.local_email,
        full_name=identity.full_name,
        is_verified=identity.email_verified,
    )
    if user is not None:
        return user
    user = await tx.one(SUPABASE_USER, supabase_id=identity.user_id)  # a concurrent first request's
    return user if user is not None else await _merge(tx, identity)


async def _refuse_deleted(data: Data | Statements, identity: SupabaseIdentity) -> None:
    """401 ``account_deleted`` for a token issued before its account here was deleted (the tombstone)."""
    deleted_at = await data.one(SUPABASE_DELETED_AT, supabase_id=identity.user_id)
    if deleted_at is not None and identity.issued_at <= deleted_at:
        raise AccountDeletedError()


async def authenticate(state: AppState, identity: SupabaseIdentity, context: RequestContext) -> UserRow:
    """The local user of a verified Supabase identity. A known user is one lookup outside any transaction
    (app/auth/identity.py); first sight (provisioning, a merge) or a newly verified email is written in a short
    transaction of its own (``context``: the request's, for the audit log), committed and its connection given
    back before the request goes on (or rolled back, e.g. 409 account_exists).

    A token issued before the account it names existed (no account, or one created after the token) is first
    checked against the tombstones of deleted accounts: an account deleted here is not provisioned again by a
    token from before the deletion (401 ``account_deleted``). For a known user the tombstone comes with the user,
    in the same statement: the hot path is one round trip whenever the token was issued."""
    found = await state.data.one(SUPABASE_CALLER, supabase_id=identity.user_id)
    if found is None:  # first sight (or a deleted account): the tombstone decides
        user = None
        await _refuse_deleted(state.data, identity)
    else:
        user, deleted_at = found
        if identity.issued_at < user.created_at and deleted_at is not None and identity.issued_at <= deleted_at:
            raise AccountDeletedError()
        if not _needs_write(user, identity):
            return user
    async with state.data.transaction(context) as tx:
        return await resolve_user(tx, identity, user)
