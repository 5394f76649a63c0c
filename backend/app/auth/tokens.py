"""The one memory of verified bearer tokens: this API's access tokens and Supabase access tokens.

A token's signature and claims never change, so each is verified once per app: pyjwt's checks cost more than
the rest of a cheap request. Authentication (app/auth/dependencies.py) and rate limiting (app/core/rate_limit.py)
ask this one cache, so a token is verified with one set of options whoever asks first. Only tokens that
verified are kept (garbage cannot fill it; a Supabase token refused for its role or as anonymous is never
kept), the oldest entry goes first, and expiry is checked on every use. Nothing about a *session* or a user is
kept here: revocation and deactivation are decided by the database on every request (docs/SCALING.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from app.auth import supabase
from app.auth.exceptions import AccessTokenExpiredError, InvalidAccessTokenError
from app.auth.jwks import JwksClient
from app.core import security
from app.core.errors import AppError
from app.core.settings import Settings

VERIFIED_TOKENS_MAX = 4096  # a few MB per app at most


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified token asserts: one of this API's sessions (``own``) or a Supabase identity."""

    own: security.AccessClaims | None
    supabase: supabase.SupabaseIdentity | None
    valid_until: datetime

    @property
    def subject(self) -> uuid.UUID:
        """The user the token speaks for: our user id, or the Supabase user's ``sub``."""
        if self.own is not None:
            return self.own.user_id
        assert self.supabase is not None
        return self.supabase.user_id


def is_own_token(settings: Settings, token: str) -> bool:
    """Decided from the header and the issuer alone, never by trying every verifier."""
    try:
        header, claims = supabase.peek(token)  # unverified, cheap: routing only
    except InvalidAccessTokenError:
        return True  # not a JWT at all: our verifier gives the precise 401
    return header.get("alg") == security.JWT_ALGORITHM and claims.get("iss") == settings.JWT_ISSUER


class TokenCache:
    def __init__(self, settings: Settings, size: int = VERIFIED_TOKENS_MAX) -> None:
        self.settings = settings
        self.size = size
        self._entries: dict[str, Verified] = {}

    def get(self, token: str) -> Verified | None:
        """A token verified before (expired or not), or None."""
        return self._entries.get(token)

    def add(self, token: str, verified: Verified) -> Verified:
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[token] = verified
        return verified

    def _own(self, token: str) -> Verified:
        try:
            claims = security.decode_access_token(self.settings, token)
        except jwt.ExpiredSignatureError as exc:
            raise AccessTokenExpiredError() from exc
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            raise InvalidAccessTokenError() from exc
        return self.add(token, Verified(own=claims, supabase=None, valid_until=claims.expires_at))

    def _supabase(self, token: str, claims: dict[str, object]) -> Verified:
        identity = supabase.identity_from_claims(self.settings, claims)  # refusals (role, anonymous) not kept
        exp = claims["exp"]
        assert isinstance(exp, int | float)  # pyjwt checked it
        valid_until = datetime.fromtimestamp(exp, UTC) + timedelta(seconds=supabase.LEEWAY_SECONDS)
        return self.add(token, Verified(own=None, supabase=identity, valid_until=valid_until))

    async def verify(self, token: str, jwks: JwksClient | None) -> Verified:
        """The verified token (401 ``token_expired`` once it expired; 401 when it does not verify; 503 while the
        Supabase key set is unreachable)."""
        verified = self._entries.get(token)
        if verified is None:
            if is_own_token(self.settings, token):
                verified = self._own(token)
            else:
                verified = self._supabase(token, await supabase.verify_token(self.settings, jwks, token))
        if verified.valid_until <= datetime.now(UTC):
            raise AccessTokenExpiredError()
        return verified

    def subject(self, token: str) -> str | None:
        """The user a bearer token speaks for, for rate limiting, without any database or network access: a
        token verified before, else one verified now if that needs no key fetch (this API's tokens, Supabase
        HS256 with SUPABASE_JWT_SECRET). None (count the request per IP) for anything else: a forged ``sub``
        never spends a user's quota; a JWKS-signed token counts per user once authentication verified it."""
        verified = self._entries.get(token)
        try:
            if verified is None:
                if is_own_token(self.settings, token):
                    verified = self._own(token)
                else:
                    claims = supabase.verify_hs256(self.settings, token)
                    if claims is None:
                        return None
                    verified = self._supabase(token, claims)
        except AppError:  # not verifiable here, expired, or refused (a role, anonymous)
            return None
        if verified.valid_until <= datetime.now(UTC):
            return None
        return str(verified.subject)
