"""Cookie mode in a real browser: Chromium (Playwright for Python, driving the Debian ``chromium``; no browser is
downloaded) loads a small page from a second origin, which signs in with frontend-contract's built client in
cookie mode, survives a reload by refreshing through the HttpOnly cookie with the CSRF header, and signs out.

The page is served on ``127.0.0.1:<another port>``: another origin than the API (``127.0.0.1:<port>``), the same
site, so the SameSite=Strict cookies are sent. The same page opened as ``localhost`` (another site) shows the
pitfall of docs/AUTH.md: the sign-in works, the reload cannot refresh, and the 401 names the cookie.

Chromium is required in CI (``.ci/run`` installs it); locally its absence skips loudly. Node/npm build the client.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import require_chromium
from tests.contract.conftest import FRONTEND_DIR, compile_client
from tests.core.uvicorn_server import free_port, uvicorn_server
from tests.factories import DEFAULT_PASSWORD

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cookie mode</title>
<link rel="icon" href="data:,">
<script type="importmap">{"imports": {"openapi-fetch": "/openapi-fetch/index.mjs"}}</script>
</head>
<body>
<script type="module">
import { createApiClient, getMe, signIn, signOut, signUp } from "/client/index.js";
const api = __API__;
// One client per page load: nothing survives a reload but the browser's cookies.
const client = createApiClient({ baseUrl: api, refreshMode: "cookie" });
window.app = { client, getMe, signIn, signOut, signUp };
window.ready = true;
</script>
</body>
</html>
"""


@contextlib.contextmanager
def page_server(root: Path, client: Path, api_url: str, port: int) -> Iterator[None]:
    """The second origin: the page, the compiled client and openapi-fetch, as static files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(PAGE.replace("__API__", json.dumps(api_url)), encoding="utf-8")
    (root / "client").symlink_to(client)
    (root / "openapi-fetch").symlink_to(FRONTEND_DIR / "node_modules" / "openapi-fetch" / "dist")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def servers(npm: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(API base URL, page port): the API in cookie mode, allowing the page's origins (127.0.0.1 and localhost).
    The client is compiled into a folder of this module's own: dist/ is the Node flows' (another xdist worker)."""
    require_chromium()  # skip (or fail in CI) before building anything
    work = tmp_path_factory.mktemp("browser-page")
    client = compile_client(npm, work / "compiled")
    port = free_port()
    origins = json.dumps([f"http://127.0.0.1:{port}", f"http://localhost:{port}"])
    with (
        uvicorn_server(
            database_url, AUTH_REFRESH_COOKIE="true", BACKEND_CORS_ORIGINS=origins, HOST="127.0.0.1"
        ) as api_url,
        page_server(work / "site", client, api_url, port),
    ):
        yield api_url, port


@pytest.fixture
def browser_page(servers: tuple[str, int], app: FastAPI) -> Iterator[Any]:
    """A fresh Chromium context (no cookies); ``app`` is requested so that the rows are cleaned after."""
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield page
            assert not [e for e in errors if "401" not in e], errors  # a refused refresh logs its 401, nothing else
        finally:
            browser.close()


def is_refresh(request: Any) -> bool:
    return bool(request.method == "POST" and request.url.endswith("/api/v1/auth/refresh"))


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.ready === true", timeout=10_000)


SIGN_UP_AND_IN = """async ([email, password]) => {
  const { client, signUp, signIn, getMe } = window.app;
  await signUp(client, { email, password });
  await signIn(client, { email, password });
  return { email: (await getMe(client)).email, stored: client.session.tokens };
}"""

RESTORE = """async () => {
  const { client, getMe } = window.app;
  const refreshed = await client.session.refresh();   // no tokens in memory: the cookie restores the session
  return refreshed ? { email: (await getMe(client)).email } : { email: null };
}"""

SIGN_OUT = """async () => {
  const { client, signOut } = window.app;
  await signOut(client);
  return document.cookie;
}"""


def test_sign_in_survive_a_reload_and_sign_out(browser_page: Any, servers: tuple[str, int]) -> None:
    api_url, port = servers
    page = browser_page
    refreshes: list[Any] = []
    page.on("request", lambda request: refreshes.append(request) if is_refresh(request) else None)
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"

    open_page(page, f"http://127.0.0.1:{port}/index.html")
    signed_in = page.evaluate(SIGN_UP_AND_IN, [email, DEFAULT_PASSWORD])
    assert signed_in["email"] == email
    assert signed_in["stored"]["refreshToken"] is None  # cookie mode: the page never holds the refresh token
    auth_url = f"{api_url}/api/v1/auth/refresh"  # the refresh cookie's Path is /api/v1/auth
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies(auth_url)}
    assert cookies["refresh_token"]["httpOnly"] and cookies["refresh_token"]["sameSite"] == "Strict"

    page.reload()
    page.wait_for_function("window.ready === true")
    assert page.evaluate("window.app.client.session.tokens") is None  # nothing survived in memory
    assert page.evaluate(RESTORE) == {"email": email}
    assert len(refreshes) == 1 and refreshes[0].headers.get("x-csrf-token")  # the double-submit header went along

    remaining_cookies = page.evaluate(SIGN_OUT)
    assert "csrf_token" not in remaining_cookies
    assert "refresh_token" not in {cookie["name"] for cookie in page.context.cookies(auth_url)}
    page.reload()
    page.wait_for_function("window.ready === true")
    assert page.evaluate(RESTORE) == {"email": None}  # signed out: nothing to restore


def test_another_site_cannot_refresh_and_is_told_why(browser_page: Any, servers: tuple[str, int]) -> None:
    """localhost is another site than the API's 127.0.0.1: the Strict cookie is set, but never sent back."""
    _, port = servers
    page = browser_page
    answers: list[Any] = []
    page.on("response", lambda response: answers.append(response) if is_refresh(response.request) else None)
    email = f"other-site-{uuid.uuid4().hex[:8]}@example.com"

    open_page(page, f"http://localhost:{port}/index.html")
    assert page.evaluate(SIGN_UP_AND_IN, [email, DEFAULT_PASSWORD])["email"] == email
    page.reload()
    page.wait_for_function("window.ready === true")
    assert page.evaluate(RESTORE) == {"email": None}
    assert len(answers) == 1 and answers[0].status == 401
    body = answers[0].json()
    assert body["code"] == "invalid_refresh_token"
    assert "no refresh_token cookie" in body["detail"] and "SameSite" in body["detail"]
