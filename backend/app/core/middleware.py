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

# API answers (JSON) load nothing and may not be framed.
CSP_STRICT = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Strict mode for the docs pages (app/core/docs.py): scripts from this origin only, no inline script (the
# Swagger init code is the file /docs/init.js); inline styles, which Swagger UI and ReDoc set at run time;
# data: images; a blob: worker for ReDoc. Nothing from another origin.
CSP_DOCS_STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# Relaxed (the development default), on every answer: also inline scripts, for docs pages built the stock way.
CSP_RELAXED = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"


def is_docs_path(path: str) -> bool:
    return path in ("/docs", "/redoc") or path.startswith("/docs/")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it: bare, "[v6]:port" or "v4:port"; IPv4-mapped IPv6 as IPv4."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """Which direct peers may tell us the real client address through X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]

    def trusts(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The right-most address not belonging to a trusted proxy; the peer itself when untrusted.

        Each trusted proxy appends the address it received from, so everything left of the right-most
        untrusted hop may have been written by the client and is ignored.
        """
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop for hop in (part.strip() for part in forwarded_for.split(",")) if hop]
        last = peer
        for hop in reversed(hops):
            ip = _parse_ip(hop)
            if ip is None:
                return last  # a malformed hop: believe nothing left of it
            if not any(ip in network for network in self.networks):
                return str(ip)
            last = str(ip)
        return last  # every hop is a proxy of ours: the left-most one is the closest we know


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
        csp = CSP_DOCS_STRICT if is_docs_path(path) else CSP_STRICT
        headers.append((b"content-security-policy", csp.encode()))
    elif mode == CspMode.RELAXED:
        headers.append((b"content-security-policy", CSP_RELAXED.encode()))
    if settings.is_production:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.proxies = TrustedProxies(settings.TRUSTED_PROXIES)
        self._api_headers = security_headers(settings, "/")
        self._docs_headers = security_headers(settings, "/docs")

    def _headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope.get("path", "/")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        return self._docs_headers if is_docs_path(path) else self._api_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))  # several header lines form one list
        forwarded_for = ",".join(forwarded) or None
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        peer = scope["client"][0] if scope.get("client") else None
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = self.proxies.client_ip(peer, forwarded_for)
        token = request_id_var.set(request_id)
        extra = self._headers_for(scope)
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                raw = headers.raw
                present = {name for name, _ in raw}  # header names are lower-case bytes in ASGI
                raw.extend(header for header in extra if header[0] not in present)
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
