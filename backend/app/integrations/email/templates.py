"""Plain-text and HTML bodies from the templates beside this file (string.Template, HTML-escaped)."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template
from urllib.parse import quote

from app.integrations.email.sender import EmailMessageData

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / name).read_text(encoding="utf-8"))


def frontend_link(frontend_url: str, path: str, token: str) -> str:
    """The frontend page a mailed token opens (``{FRONTEND_URL}/<path>?token=...``)."""
    return f"{frontend_url}/{path}?token={quote(token)}"


def render(name: str, *, to: str, subject: str, **values: str) -> EmailMessageData:
    """``name``.txt and ``name``.html with ``values`` substituted (escaped in the HTML part)."""
    text = _template(f"{name}.txt").substitute(values)
    escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
    body = _template(f"{name}.html").substitute(escaped)
    return EmailMessageData(to=to, subject=subject, text=text, html=body)
