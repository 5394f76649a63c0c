"""The mails of the auth flows, sent after the response through the one email module."""

from __future__ import annotations

import logging

from fastapi import BackgroundTasks, FastAPI, Request

from app.auth import service as auth_service
from app.core.context import RequestContext
from app.core.settings import Settings
from app.integrations.email import EmailMessageData, EmailSender, frontend_link, render
from app.state import state_of

logger = logging.getLogger("app.auth.mail")


def _sender(app: FastAPI) -> EmailSender:
    return state_of(app).email_sender


def _settings(app: FastAPI) -> Settings:
    return state_of(app).settings


def _token_message(
    settings: Settings, template: str, subject: str, path: str, hours: int, *, to: str, token: str
) -> EmailMessageData:
    """A mail whose link carries a single-use token valid for ``hours``."""
    link = frontend_link(settings.FRONTEND_URL, path, token)
    return render(template, to=to, subject=subject, link=link, hours=str(hours))


def verification_message(settings: Settings, *, to: str, token: str) -> EmailMessageData:
    subject, hours = "Confirm your email address", settings.EMAIL_VERIFY_EXPIRE_HOURS
    return _token_message(settings, "verify_email", subject, "verify-email", hours, to=to, token=token)


def password_reset_message(settings: Settings, *, to: str, token: str) -> EmailMessageData:
    subject, hours = "Reset your password", settings.PASSWORD_RESET_EXPIRE_HOURS
    return _token_message(settings, "password_reset", subject, "reset-password", hours, to=to, token=token)


def email_change_messages(
    settings: Settings, *, old_email: str, new_email: str, token: str
) -> tuple[EmailMessageData, EmailMessageData]:
    """The confirmation link, to the new address, and the notice without a link, to the current one."""
    confirmation = render(
        "email_change",
        to=new_email,
        subject="Confirm your new email address",
        email=new_email,
        link=frontend_link(settings.FRONTEND_URL, "confirm-email-change", token),
        hours=str(settings.EMAIL_CHANGE_EXPIRE_HOURS),
    )
    notice = render(
        "email_change_notice",
        to=old_email,
        subject="A change of your email address was requested",
        email=old_email,
        new_email=new_email,
    )
    return confirmation, notice


def send_email_change(
    request: Request, background: BackgroundTasks, *, old_email: str, new_email: str, token: str
) -> None:
    """Mail the confirmation link to the new address and a notice (no link) to the current one, after the
    response."""
    for message in email_change_messages(_settings(request.app), old_email=old_email, new_email=new_email, token=token):
        background.add_task(_sender(request.app).send, message)


def send_verification(request: Request, background: BackgroundTasks, *, to: str, token: str) -> None:
    """Mail a verification link after the response (the token was created in the request's transaction)."""
    message = verification_message(_settings(request.app), to=to, token=token)
    background.add_task(_sender(request.app).send, message)


def password_reset_later(request: Request, background: BackgroundTasks, *, email: str, context: RequestContext) -> None:
    """Everything of a reset request happens after the 202: the request itself does the same (nothing) for
    every address, so neither its answer nor its timing tells whether the account exists. ``context``: the
    request's, for the audit event."""
    background.add_task(_password_reset_job, request.app, email=email, context=context)


async def _password_reset_job(app: FastAPI, *, email: str, context: RequestContext) -> None:
    settings = _settings(app)
    try:
        async with state_of(app).data.transaction(context) as tx:
            found = await auth_service.request_password_reset(tx, settings, email=email)
    except Exception as exc:  # after the response: log, never raise into the server
        logger.warning("password reset for a requested address not prepared: %s: %s", type(exc).__name__, exc)
        return
    if found is not None:
        user, token = found
        await _sender(app).send(password_reset_message(settings, to=user.email, token=token))
