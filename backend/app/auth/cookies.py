"""Browser-safe refresh (``AUTH_REFRESH_COOKIE=true``): the refresh token in an HttpOnly cookie, guarded by a
double-submit CSRF token.

- ``refresh_token``: HttpOnly, SameSite=Strict, Secure in production, ``Path={API_V1_PREFIX}/auth`` (only the
  auth endpoints ever receive it), Max-Age = the refresh lifetime. No script can read it.
- ``csrf_token``: readable (not HttpOnly), SameSite=Strict, Secure in production, ``Path=/`` so that the SPA's
  ``document.cookie`` sees it on any page; the same value is also sent in the ``X-CSRF-Token`` response header
  (for a frontend on a sibling origin that cannot read the API's cookies). It is random and signed: a nonce
  plus an HMAC (``SECRET_KEY``) over the session id, so a value planted by a sibling subdomain is refused.
- ``/auth/refresh`` and ``/auth/logout`` take the cookie only when the body carries no refresh token, and only
  with an ``X-CSRF-Token`` request header equal to the ``csrf_token`` cookie (else 403 ``csrf_failed``).
  A refresh token in the body needs no CSRF token: a cross-site page cannot know it.

With the setting off, nothing here runs: no Set-Cookie, and cookies sent by a client are ignored.

The pitfall: ``SameSite=Strict`` cookies go only to the *site* they came from (scheme aside, the registrable
domain: ``app.example.com`` and ``api.example.com`` are one site; ``localhost`` and ``127.0.0.1`` are two). A page
on another site than the API signs in fine, then its refresh arrives without the cookie. ``cross_site_origins``
names such CORS origins (the app warns at start-up), and the refresh answer's detail names the likely cause.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import uuid
from urllib.parse import urlsplit

from fastapi import Request, Response

from app.auth.exceptions import CsrfError
from app.core import security
from app.core.settings import Settings

REFRESH_COOKIE = "refresh_token"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_COOKIE_PATH = "/"


def refresh_cookie_path(settings: Settings) -> str:
    return f"{settings.API_V1_PREFIX}/auth"


def _csrf_mac(settings: Settings, session_id: uuid.UUID, nonce: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), f"csrf|{session_id}|{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_csrf_token(settings: Settings, session_id: uuid.UUID) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_csrf_mac(settings, session_id, nonce)}"


def csrf_token_matches_session(settings: Settings, csrf: str, session_id: uuid.UUID) -> bool:
    nonce, _, mac = csrf.partition(".")
    if not nonce or not mac:
        return False
    return hmac.compare_digest(_csrf_mac(settings, session_id, nonce).encode(), mac.encode())


def set_session_cookies(response: Response, settings: Settings, *, refresh_token: str, session_id: uuid.UUID) -> None:
    """Set both cookies (and the ``X-CSRF-Token`` header) on a login/token/refresh answer in cookie mode."""
    if not settings.AUTH_REFRESH_COOKIE:
        return
    max_age = settings.REFRESH_TOKEN_EXPIRE_DAYS * 24 * 60 * 60
    csrf = new_csrf_token(settings, session_id)
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=max_age,
        path=refresh_cookie_path(settings),
        secure=settings.is_production,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        path=CSRF_COOKIE_PATH,
        secure=settings.is_production,
        httponly=False,
        samesite="strict",
    )
    response.headers[CSRF_HEADER] = csrf


def clear_session_cookies(response: Response, settings: Settings) -> None:
    """Expire both cookies (same name, path and flags as when they were set)."""
    if not settings.AUTH_REFRESH_COOKIE:
        return
    response.delete_cookie(
        REFRESH_COOKIE,
        path=refresh_cookie_path(settings),
        secure=settings.is_production,
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(
        CSRF_COOKIE, path=CSRF_COOKIE_PATH, secure=settings.is_production, httponly=False, samesite="strict"
    )


def check_csrf(request: Request, settings: Settings, refresh_token: str) -> None:
    """The ``X-CSRF-Token`` header must equal the ``csrf_token`` cookie, and be one we issued for the session
    the refresh cookie names. Raises CsrfError (403 ``csrf_failed``)."""
    header = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not header or not cookie or not hmac.compare_digest(header.encode(), cookie.encode()):
        raise CsrfError()
    parts = security.parse_refresh_token(refresh_token)
    if parts is not None and not csrf_token_matches_session(settings, cookie, parts.session_id):
        raise CsrfError()
    # An unparsable refresh cookie gets its precise 401 from the refresh/logout service.


def refresh_token_from(request: Request, settings: Settings, body_token: str | None) -> str | None:
    """The refresh token a request presents: the body's (no CSRF needed), else in cookie mode the cookie's
    (CSRF-checked), else None."""
    if body_token:
        return body_token
    if not settings.AUTH_REFRESH_COOKIE:
        return None
    cookie = request.cookies.get(REFRESH_COOKIE)
    if not cookie:
        return None
    check_csrf(request, settings, cookie)
    return cookie


MISSING_REFRESH_TOKEN = "A refresh token is required."
MISSING_REFRESH_COOKIE = (
    "A refresh token is required, and no refresh_token cookie came with this request. The cookie is "
    "SameSite=Strict: a browser sends it only when the page is on the same site as the API (localhost and "
    "127.0.0.1 are different sites) and the request is sent with credentials (fetch: credentials: 'include'); "
    "in production it is Secure (HTTPS only). Sign in again from a page on the API's site."
)


def missing_refresh_token_detail(settings: Settings) -> str:
    """The detail of a refresh (or logout) that presents no refresh token: in cookie mode, the likely cause."""
    return MISSING_REFRESH_COOKIE if settings.AUTH_REFRESH_COOKIE else MISSING_REFRESH_TOKEN


def site_of(host: str) -> str | None:
    """The site of a host for SameSite: an IP address or a single-label name (``localhost``) is its own site; a
    domain name's site is its last two labels (``app.example.com`` -> ``example.com``). An approximation of the
    registrable domain without the public-suffix list: ``a.example.co.uk`` and ``b.other.co.uk`` look alike to
    it, so it may miss a mismatch there, never invent one between hosts that share their last two labels."""
    host = host.strip().lower().rstrip(".").strip("[]")
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        return ".".join(labels[-2:]) if len(labels) > 1 else host
    return None if address.is_unspecified else str(address)  # 0.0.0.0 / :: serve every interface: no site


def cross_site_origins(settings: Settings) -> list[str]:
    """The CORS origins whose pages cannot use cookie mode with this API: another site than ``HOST``'s."""
    if not settings.AUTH_REFRESH_COOKIE:
        return []
    own = site_of(settings.HOST)
    if own is None:
        return []
    return [
        origin
        for origin in settings.BACKEND_CORS_ORIGINS
        if "*" not in origin and site_of(urlsplit(origin).hostname or "") not in (own, None)
    ]
