"""Kept so that routers written against the former hand-kept lists still import: ``responses(...)`` now adds
nothing. Every operation's error answers are collected from the code that raises them when the app is built
(app/core/openapi.py, app/core/raises.py); drop the ``responses=responses(...)`` argument from a route."""

from __future__ import annotations

from typing import Any


def responses(*answers: object) -> dict[int | str, dict[str, Any]]:
    del answers  # the statuses and error classes once listed here are found in the code now
    return {}
