"""The drift check: every error answer a test sees must be one its operation documents.

``client_for`` (tests/conftest.py) gives every test client a response hook that calls ``check_answer``: an error
answer (4xx, 503) of a documented operation whose status is not in that operation's ``responses``, or whose
``code`` is not in the enum of that response's schema, fails the test at once, naming the operation, the status
and the code. The whole suite thereby drives it: a new error raised somewhere without reaching the document
(app/core/openapi.py collects them from the code) cannot pass unnoticed.

Not checked: answers of no documented operation (unknown paths, wrong methods: 404/405 of the router), 500
(``internal_error`` is the unexpected, never part of a contract), and bodies without a ``code``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.core.openapi import path_operations

_PARAMETER = re.compile(r"\{[^/{}]+\}")


class UndocumentedAnswer(AssertionError):
    """An answer the OpenAPI document does not list for its operation."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    pattern: re.Pattern[str]
    literal: int  # characters outside parameters: the most literal template wins (/users/me over /users/{id})
    responses: dict[str, Any]


class Documented:
    """The error answers of one app's OpenAPI document, by (method, concrete path)."""

    def __init__(self, document: dict[str, Any], only: set[tuple[str, str]]) -> None:
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        self.operations: list[Operation] = []
        for path, item in document["paths"].items():
            regex = "^" + _PARAMETER.sub("[^/]+", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$"
            literal = len(_PARAMETER.sub("", path))
            for method, operation in item.items():
                if (path, method.upper()) in only and isinstance(operation, dict) and "responses" in operation:
                    self.operations.append(
                        Operation(method.upper(), path, re.compile(regex), literal, operation["responses"])
                    )
        self.operations.sort(key=lambda op: -op.literal)

    def operation(self, method: str, path: str) -> Operation | None:
        return next((op for op in self.operations if op.method == method and op.pattern.match(path)), None)

    def _codes(self, response: dict[str, Any]) -> set[str] | None:
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            schema = self.schemas.get(ref.rsplit("/", 1)[1], {})
        code = schema.get("properties", {}).get("code")
        if code is None:
            return None
        if "$ref" in code:
            code = self.schemas.get(code["$ref"].rsplit("/", 1)[1], {})
        return set(code.get("enum", []))

    def problem(self, method: str, path: str, status: int, code: str) -> str | None:
        """Why this answer is not documented, or None when it is (or is not checked)."""
        operation = self.operation(method, path)
        if operation is None:
            return None
        response = operation.responses.get(str(status))
        if response is None:
            return f"{method} {operation.path} answered {status} (code {code!r}), a status its document does not list"
        codes = self._codes(response)
        if codes is None:
            return f"{method} {operation.path} {status}: the documented body declares no `code` (answered {code!r})"
        if code not in codes:
            return f"{method} {operation.path} answered {status} {code!r}; its document lists {sorted(codes)}"
        return None


_documents: dict[tuple[tuple[str, str], ...], Documented] = {}


def documented(app: FastAPI) -> Documented:
    """The app's document, read once per set of routes (apps built with other settings share it). Only the app's
    own operations are checked: a route a test adds to its app documents nothing."""
    own = {
        (route.path, method)
        for route in path_operations(app)
        if route.endpoint.__module__.startswith("app.")
        for method in route.methods
    }
    key = tuple(sorted(own))
    if key not in _documents:
        _documents[key] = Documented(app.openapi(), own)
    return _documents[key]


def checked(status: int) -> bool:
    return 400 <= status < 500 or status == 503


async def check_answer(app: FastAPI, response: httpx.Response) -> None:
    """The response hook of every test client (tests/conftest.py: client_for)."""
    if not checked(response.status_code) or response.request.method == "HEAD":
        return
    if not response.headers.get("content-type", "").startswith("application/json"):
        return
    await response.aread()
    try:
        body = response.json()
    except ValueError:
        return
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str):
        return
    problem = documented(app).problem(response.request.method, response.request.url.path, response.status_code, code)
    if problem is not None:
        raise UndocumentedAnswer(
            f"{problem}. Declare the error where it is raised (app/core/raises.py) so that the operation documents it."
        )
