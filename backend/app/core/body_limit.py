"""Refuse request bodies over MAX_BODY_SIZE with a JSON 413 (``payload_too_large``), before any handler reads
them: by ``Content-Length`` up front, and by counting the bytes of a chunked body as it arrives."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_response

_NO_BODY_READ = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods whose routes take no body here (FastAPI reads a body only for routes that declare one)."""


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"The request body exceeds {self.max_body_size} bytes.", "payload_too_large", {"Connection": "close"}
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_body_size:
                    await self._refuse(scope, receive, send)
                    return
                break
        if declared is not None or scope["method"] in _NO_BODY_READ:
            # A declared length within the limit (the server delivers no more than Content-Length), or a
            # method whose routes never read a body: nothing to count, nothing to wrap on the hot path.
            await self.app(scope, receive, send)
            return

        received = 0
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework may turn a failed body read into its own 400: answer 413 instead.
            nonlocal replaced
            if not too_large:
                await send(message)
            elif not replaced:
                replaced = True
                await self._refuse(scope, receive, send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._refuse(scope, receive, send)
