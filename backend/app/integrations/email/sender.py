"""The one way mail leaves the API: ``EmailSender.send``, scheduled as a background task after the response.

- ``EMAIL_BACKEND=console`` (the default): the message is logged and kept in ``outbox`` (a developer, or a test,
  reads the link there). Nothing leaves the process.
- ``EMAIL_BACKEND=smtp``: aiosmtplib (asyncio all the way, nothing blocks the event loop), bounded by
  ``SMTP_TIMEOUT`` per network step and by a total budget for the whole conversation.

``send`` never raises (except cancellation): a refusing, slow or unreachable server is logged as a warning and
the request that triggered the mail has already been answered.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from app.core.settings import EmailBackend, Settings, SmtpTls

logger = logging.getLogger("app.email")

# The whole SMTP conversation (connect, TLS, auth, MAIL/RCPT/DATA, QUIT) gets at most this many timeouts.
TOTAL_BUDGET_FACTOR = 3


@dataclass(frozen=True, slots=True)
class EmailMessageData:
    to: str
    subject: str
    text: str
    html: str


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip(" >") or "localhost"


class EmailSender:
    """Sends mail without blocking the event loop; a failure is logged, never raised to a request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The console backend keeps the last messages, so that a developer (or a test) can read them.
        self.outbox: deque[EmailMessageData] = deque(maxlen=100)
        self.sent = 0
        self.failed = 0
        self._fqdn: str | None = None

    @property
    def backend(self) -> EmailBackend:
        return self.settings.EMAIL_BACKEND

    def build(self, message: EmailMessageData) -> EmailMessage:
        """A multipart/alternative message: the plain text first, the HTML as the preferred alternative."""
        mail = EmailMessage()
        mail["From"] = self.settings.EMAIL_FROM
        mail["To"] = message.to  # raises ValueError on a header injection attempt (CR/LF)
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=_domain(self.settings.EMAIL_FROM))
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail

    async def send(self, message: EmailMessageData) -> bool:
        """True when the message was handed over (logged, or accepted by the SMTP server)."""
        try:
            if self.backend == EmailBackend.SMTP:
                mail = self.build(message)
                budget = self.settings.SMTP_TIMEOUT * TOTAL_BUDGET_FACTOR
                async with asyncio.timeout(budget):
                    await self._send_smtp(mail)
                logger.info("email sent to=%s subject=%s", message.to, message.subject)
            else:
                self.outbox.append(message)
                if self.settings.is_production:
                    # Bodies carry one-time tokens (verification, reset, invitation links): never in production logs.
                    logger.info(
                        "email (console backend) to=%s subject=%s; body not logged", message.to, message.subject
                    )
                else:
                    logger.info(
                        "email (console backend) to=%s subject=%s\n%s", message.to, message.subject, message.text
                    )
        except Exception as exc:  # a mail server's trouble must never become a request's 500
            self.failed += 1
            logger.warning(
                "email to=%s subject=%s not sent: %s: %s", message.to, message.subject, type(exc).__name__, exc
            )
            return False
        self.sent += 1
        return True

    async def _local_hostname(self) -> str:
        # What aiosmtplib would say in EHLO (socket.getfqdn, a DNS lookup), looked up once in a thread
        # rather than once per message.
        if self._fqdn is None:
            self._fqdn = await asyncio.to_thread(socket.getfqdn)
        return self._fqdn

    async def _send_smtp(self, mail: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(
            mail,
            hostname=s.SMTP_HOST,
            local_hostname=await self._local_hostname(),
            port=s.SMTP_PORT,
            username=s.SMTP_USERNAME or None,
            password=s.SMTP_PASSWORD or None,
            use_tls=s.SMTP_TLS == SmtpTls.SSL,
            # ``none`` means none: no opportunistic STARTTLS either (aiosmtplib's default would try it).
            start_tls=s.SMTP_TLS == SmtpTls.STARTTLS,
            timeout=s.SMTP_TIMEOUT,
        )


def create_sender(settings: Settings) -> EmailSender:
    if settings.is_production and settings.EMAIL_BACKEND == EmailBackend.CONSOLE:
        logger.warning("EMAIL_BACKEND=console in production: mails are not sent (recipient and subject are logged)")
    return EmailSender(settings)
