"""A real SMTP server on loopback for tests (aiosmtpd in its own thread), and helpers to read what it got."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def link(self, path: str) -> str:
        """The first ``…/{path}?token=…`` link of the plain-text body."""
        match = re.search(rf"(\S+/{re.escape(path)}\?token=[A-Za-z0-9_\-%]+)", self.text)
        assert match, f"no /{path} link in:\n{self.text}"
        return match.group(1)


@dataclass
class RecordingHandler:
    """Stores every accepted message; ``refuse`` answers DATA with that reply (e.g. a 550) instead."""

    refuse: str | None = None
    messages: list[Delivered] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Delivered]:
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]


@contextmanager
def smtp_server(refuse: str | None = None) -> Iterator[tuple[int, RecordingHandler]]:
    handler = RecordingHandler(refuse=refuse)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()
