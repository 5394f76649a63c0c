"""The invitation mail, sent after the response through the one email module."""

from __future__ import annotations

from fastapi import BackgroundTasks, Request

from app.core.settings import Settings
from app.integrations.email import EmailSender, frontend_link, render


def send_invitation(
    request: Request,
    background: BackgroundTasks,
    *,
    to: str,
    token: str,
    inviter: str,
    org_name: str,
    role: str,
) -> None:
    settings: Settings = request.app.state.settings
    sender: EmailSender = request.app.state.email_sender
    message = render(
        "invitation",
        to=to,
        subject=f"You are invited to join {org_name}",
        inviter=inviter,
        org_name=org_name,
        role=role,
        link=frontend_link(settings.FRONTEND_URL, "accept-invitation", token),
        days=str(settings.INVITATION_EXPIRE_DAYS),
    )
    background.add_task(sender.send, message)
