"""The invitation mail, sent after the response through the one email module."""

from __future__ import annotations

from fastapi import BackgroundTasks, Request

from app.integrations.email import frontend_link, render
from app.state import state_of


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
    state = state_of(request.app)
    settings, sender = state.settings, state.email_sender
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
