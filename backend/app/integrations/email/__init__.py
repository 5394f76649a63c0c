"""The one email module: console (logged) or SMTP, chosen by EMAIL_BACKEND."""

from app.integrations.email.sender import EmailMessageData, EmailSender, create_sender
from app.integrations.email.templates import frontend_link, render

__all__ = ["EmailMessageData", "EmailSender", "create_sender", "frontend_link", "render"]
