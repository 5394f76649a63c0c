from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from app.core.settings import Settings
from app.integrations.email import EmailMessageData, EmailSender, create_sender, render
from tests.integrations.smtp import free_port, smtp_server


def settings_for(**overrides: object) -> Settings:
    return Settings(_env_file=None, SECRET_KEY="x" * 40, **overrides)  # type: ignore[arg-type]


def a_message(to: str = "someone@example.com") -> EmailMessageData:
    return render(
        "verify_email",
        to=to,
        subject="Confirm your email address",
        link="http://localhost:5173/verify-email?token=abc&x=<b>",
        hours="48",
    )


class TestRender:
    def test_text_and_html_with_escaping(self) -> None:
        message = a_message()
        assert "http://localhost:5173/verify-email?token=abc&x=<b>" in message.text
        assert "token=abc&amp;x=&lt;b&gt;" in message.html
        assert "x=<b>" not in message.html
        assert "48 hours" in message.text


class TestConsoleBackend:
    @pytest.mark.asyncio
    async def test_keeps_and_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        sender = create_sender(settings_for())
        with caplog.at_level(logging.INFO, logger="app.email"):
            assert await sender.send(a_message()) is True
        assert list(sender.outbox) == [a_message()]
        assert "someone@example.com" in caplog.text


class TestSmtpBackend:
    @pytest.mark.asyncio
    async def test_delivers_multipart(self) -> None:
        with smtp_server() as (port, handler):
            sender = EmailSender(settings_for(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port))
            assert await sender.send(a_message("dest@example.com")) is True
        [delivered] = handler.messages
        assert delivered.rcpt_tos == ["dest@example.com"]
        assert delivered.mail_from == "no-reply@localhost"
        assert delivered.message["Subject"] == "Confirm your email address"
        assert delivered.message["Date"] and delivered.message["Message-ID"]
        assert delivered.link("verify-email") == "http://localhost:5173/verify-email?token=abc"
        assert "token=abc&x=<b>" in delivered.text
        assert "&amp;" in delivered.html
        assert sender.outbox == type(sender.outbox)(maxlen=100)  # nothing kept: SMTP delivered it

    @pytest.mark.asyncio
    async def test_refusing_server_logged_as_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        with smtp_server(refuse="550 Mailbox unavailable") as (port, handler):
            sender = EmailSender(settings_for(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port))
            with caplog.at_level(logging.WARNING, logger="app.email"):
                assert await sender.send(a_message()) is False
        assert handler.messages == []
        [record] = [r for r in caplog.records if r.name == "app.email"]
        assert record.levelno == logging.WARNING
        assert "not sent" in record.getMessage()
        assert sender.failed == 1

    @pytest.mark.asyncio
    async def test_closed_port_logged_as_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        sender = EmailSender(settings_for(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=free_port()))
        with caplog.at_level(logging.WARNING, logger="app.email"):
            assert await sender.send(a_message()) is False
        assert "not sent" in caplog.text

    @pytest.mark.asyncio
    async def test_header_injection_not_sent(self) -> None:
        with smtp_server() as (port, handler):
            sender = EmailSender(settings_for(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=port))
            assert await sender.send(a_message("a@example.com\r\nBcc: victim@example.com")) is False
        assert handler.messages == []


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never says a word (no SMTP banner)."""
    hold = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        hold.set()
        server.close()
        await server.wait_closed()


class TestTimeouts:
    @pytest.mark.asyncio
    async def test_silent_server_times_out_without_blocking_the_loop(self, silent_server: int) -> None:
        sender = EmailSender(
            settings_for(EMAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=silent_server, SMTP_TIMEOUT=0.3)
        )
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            assert await asyncio.wait_for(sender.send(a_message()), timeout=5) is False
        finally:
            task.cancel()
        assert ticks >= 10  # the loop kept running while the sender waited for the server
