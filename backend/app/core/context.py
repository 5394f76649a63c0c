"""Where a request comes from, for the handlers that record it: one dependency instead of ``Request``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request


def client_ip(request: Request) -> str | None:
    """The caller's IP: the proxy-aware one the request-id middleware put in the state, else the peer's."""
    ip: str | None = getattr(request.state, "client_ip", None)
    if ip is None and request.client:
        ip = request.client.host
    return ip


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the audit log (``ip_address``) and a new session (``user_agent``) record about the caller."""

    ip_address: str | None
    user_agent: str | None


NO_CONTEXT = RequestContext(ip_address=None, user_agent=None)
"""Work no request asked for (start-up, a background job, the command line)."""


async def request_context(request: Request) -> RequestContext:
    return RequestContext(ip_address=client_ip(request), user_agent=request.headers.get("user-agent"))


RequestContextDep = Annotated[RequestContext, Depends(request_context)]
