"""Pure ASGI middleware: request id, real client address, security headers, and the last-resort 500.

One class, one pass over the response headers: middleware is paid on every request.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import unexpected_error_response
from app.core.logging import request_id_var
from app.core.settings import CspMode, Settings

logger = logging.getLogger("app.middleware")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

CSP_STRICT = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# What the self-hosted Swagger UI and ReDoc pages need: their own scripts and styles, inline init code,
# data: images, and a blob: worker for ReDoc. Nothing from another origin.
CSP_RELAXED = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
DOCS_PATHS = ("/docs", "/redoc", "/static-offline-docs")


class TrustedProxies:
    """Which direct peers may tell us the real client address through X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The right-most address not belonging to a trusted proxy; the peer itself when untrusted."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain is not believed
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def security_headers(settings: Settings, path: str) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    mode = settings.csp_mode
    if mode == CspMode.STRICT:
        headers.append((b"content-security-policy", CSP_STRICT.encode()))
    elif mode == CspMode.RELAXED:
        headers.append((b"content-security-policy", CSP_RELAXED.encode()))
    if settings.is_production:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.proxies = TrustedProxies(settings.TRUSTED_PROXIES)
        self._headers_by_kind = {
            False: security_headers(settings, "/"),
        }

    def _headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        docs = path.startswith(DOCS_PATHS)
        cached = self._headers_by_kind.get(docs)
        if cached is None:
            cached = security_headers(self.settings, path)
            if docs and self.settings.csp_mode == CspMode.STRICT:
                # Strict mode still lets the self-hosted docs render; see app/core/docs.py.
                cached = [h for h in cached if h[0] != b"content-security-policy"]
                cached.append((b"content-security-policy", CSP_DOCS_STRICT.encode()))
            self._headers_by_kind[docs] = cached
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = None
        forwarded_for = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        peer = scope["client"][0] if scope.get("client") else None
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = self.proxies.client_ip(peer, forwarded_for)
        token = request_id_var.set(request_id)
        extra = self._headers_for(scope.get("path", "/"))
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in extra:
                    key = name.decode()
                    if key not in headers:
                        headers.raw.append((name, value))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:
                logger.error("error after the response started (request_id=%s)", request_id, exc_info=exc)
                raise
            response = unexpected_error_response(exc, request_id)
            await response(scope, receive, send_wrapper)
        finally:
            request_id_var.reset(token)


# Strict mode for the docs pages: our own scripts only; the init code lives in a static file.
CSP_DOCS_STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
