"""The mails of the auth flows, sent after the response through the one email module."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import BackgroundTasks, Request

from app.core.settings import Settings
from app.integrations.email import EmailSender, render


def _sender(request: Request) -> EmailSender:
    sender: EmailSender = request.app.state.email_sender
    return sender


def send_verification(request: Request, background: BackgroundTasks, *, to: str, token: str) -> None:
    settings: Settings = request.app.state.settings
    message = render(
        "verify_email",
        to=to,
        subject="Confirm your email address",
        link=f"{settings.FRONTEND_URL}/verify-email?token={quote(token)}",
        hours=str(settings.EMAIL_VERIFY_EXPIRE_HOURS),
    )
    background.add_task(_sender(request).send, message)


def send_password_reset(request: Request, background: BackgroundTasks, *, to: str, token: str) -> None:
    settings: Settings = request.app.state.settings
    message = render(
        "password_reset",
        to=to,
        subject="Reset your password",
        link=f"{settings.FRONTEND_URL}/reset-password?token={quote(token)}",
        hours=str(settings.PASSWORD_RESET_EXPIRE_HOURS),
    )
    background.add_task(_sender(request).send, message)
