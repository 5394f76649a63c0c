from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from app.core.settings import EmailBackend, Settings, SmtpTls

logger = logging.getLogger("app.email")


@dataclass(frozen=True, slots=True)
class EmailMessageData:
    to: str
    subject: str
    text: str
    html: str


class EmailSender:
    """Sends mail without blocking the event loop; a failure is logged, never raised to a request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The console backend keeps the last messages, so that a developer (or a test) can read them.
        self.outbox: deque[EmailMessageData] = deque(maxlen=100)

    def _build(self, message: EmailMessageData) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.settings.EMAIL_FROM
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: EmailMessageData) -> bool:
        try:
            if self.settings.EMAIL_BACKEND == EmailBackend.SMTP:
                await self._send_smtp(self._build(message))
            else:
                self.outbox.append(message)
                logger.info("email (console backend) to=%s subject=%s\n%s", message.to, message.subject, message.text)
        except Exception as exc:  # a mail server's trouble must never become a request's 500
            logger.warning("email to %s not sent: %s: %s", message.to, type(exc).__name__, exc)
            return False
        return True

    async def _send_smtp(self, mail: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(
            mail,
            hostname=s.SMTP_HOST,
            port=s.SMTP_PORT,
            username=s.SMTP_USERNAME or None,
            password=s.SMTP_PASSWORD or None,
            use_tls=s.SMTP_TLS == SmtpTls.SSL,
            start_tls=s.SMTP_TLS == SmtpTls.STARTTLS,
            timeout=s.SMTP_TIMEOUT,
        )


def create_sender(settings: Settings) -> EmailSender:
    return EmailSender(settings)
