"""/docs and /redoc: every asset from the app itself, no inline script, and Swagger UI really renders under the
CSP in a headless Chromium."""

from __future__ import annotations

import re
import socketserver
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.core.docs import VENDOR_DIR
from tests.conftest import AppFactory, alembic_upgrade, client_for, in_thread, require_chromium
from tests.core.uvicorn_server import uvicorn_server

SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)
ASSET_REF = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']""")


@pytest_asyncio.fixture
async def docs_app(make_app: AppFactory) -> FastAPI:
    return await make_app(CSP_MODE="strict")


def assets_of(page: str) -> list[str]:
    return ASSET_REF.findall(page)


def assert_external_scripts_only(page: str) -> None:
    scripts = SCRIPT_TAG.findall(page)
    assert scripts
    for attributes, body in scripts:
        assert "src=" in attributes and not body.strip(), attributes


@pytest.mark.asyncio
class TestSwaggerPage:
    async def test_self_hosted_without_inline_script(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            response = await client.get("/docs")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            page = response.text
            assert_external_scripts_only(page)
            assert "cdn." not in page and "https://" not in page
            refs = assets_of(page)
            assert "/docs/init.js" in refs and "/docs/static/swagger-ui-bundle.js" in refs
            for ref in refs:
                asset = await client.get(ref)
                assert asset.status_code == 200, ref
            assert 'data-openapi-url="/api/v1/openapi.json"' in page

    async def test_bundle_is_swagger_ui_5(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            bundle = await client.get("/docs/static/swagger-ui-bundle.js")
        assert bundle.status_code == 200
        assert "javascript" in bundle.headers["content-type"]
        assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle.text)  # 5.x reads OpenAPI 3.1

    async def test_init_script(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            response = await client.get("/docs/init.js")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
        assert "SwaggerUIBundle(" in response.text and "validatorUrl: null" in response.text

    async def test_openapi_declares_the_password_flow(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            spec = (await client.get("/api/v1/openapi.json")).json()
        flows = [scheme.get("flows", {}) for scheme in spec["components"]["securitySchemes"].values()]
        assert any(flow.get("password", {}).get("tokenUrl") == "/api/v1/auth/token" for flow in flows)


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/docs", "/redoc", "/api/v1/openapi.json"])
async def test_head_answers_200(docs_app: FastAPI, path: str) -> None:
    """Link checkers and monitors ask with HEAD: the pages exist (200), no 405."""
    async with client_for(docs_app) as client:
        response = await client.head(path)
    assert response.status_code == 200


@pytest.mark.asyncio
class TestOAuth2Redirect:
    async def test_page_and_script(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            page = await client.get("/docs/oauth2-redirect")
            assert page.status_code == 200
            assert_external_scripts_only(page.text)
            script = await client.get("/docs/oauth2-redirect.js")
        assert script.status_code == 200
        assert "swaggerUIRedirectOauth2" in script.text
        assert "<script" not in script.text


@pytest.mark.asyncio
class TestRedocPage:
    async def test_self_hosted_without_inline_script(self, docs_app: FastAPI) -> None:
        async with client_for(docs_app) as client:
            response = await client.get("/redoc")
            assert response.status_code == 200
            page = response.text
            assert_external_scripts_only(page)
            assert "https://" not in page and "fonts.googleapis" not in page
            refs = assets_of(page)
            assert "/docs/redoc.js" in refs
            for ref in refs:
                assert (await client.get(ref)).status_code == 200, ref

    async def test_bundle_loads_no_remote_image(self, docs_app: FastAPI) -> None:
        """The vendored bundle shows Redocly's logo from their CDN; the one served here does not."""
        async with client_for(docs_app) as client:
            bundle = await client.get("/docs/redoc.js")
        assert bundle.status_code == 200
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert "cdn.redoc.ly" not in bundle.text and "redocly logo" in bundle.text
        assert "cdn.redoc.ly" in (VENDOR_DIR / "redoc.standalone.js").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('docs-db') / 'docs.db'}"
    in_thread(alembic_upgrade, url)
    return url


# Chromium's own service traffic (component updates, its clock, account and autofill services), which flags do
# not fully silence: not asked for by the page. Asset hosts (fonts.googleapis.com, any CDN) are not in it.
BROWSER_SERVICES = re.compile(
    r"(^|\.)(google\.com|gvt1\.com|(update|content-autofill|optimizationguide-pa|safebrowsing)\.googleapis\.com)$"
)


def host_of(target: str) -> str:
    """The host of a proxied request target: ``host:443`` (CONNECT) or ``http://host/path``."""
    return urlsplit(target if "://" in target else f"//{target}").hostname or target


class RecordingProxy:
    """An HTTP proxy on loopback that forwards nothing: it records the host of every request a browser sends
    through it (``CONNECT host:443`` for https, the absolute URL for http) and answers 502. Chromium never
    proxies loopback, so the app itself is reached directly and anything recorded is another origin."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    def _handler(self) -> type[socketserver.StreamRequestHandler]:
        hosts = self.hosts

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(8192).decode("latin-1").split()
                if len(line) >= 2:
                    hosts.append(line[1])
                self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        return Handler

    @property
    def address(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> RecordingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def render(browser: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        *extra,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


class TestRenderedInChromium:
    @pytest.mark.parametrize("csp_mode", ["strict", "relaxed"])
    def test_swagger_ui_renders_under_csp(self, sqlite_database: str, tmp_path: Path, csp_mode: str) -> None:
        browser = require_chromium()
        with uvicorn_server(sqlite_database, CSP_MODE=csp_mode) as base_url:
            csp = httpx.get(f"{base_url}/docs").headers["content-security-policy"]
            result = render(browser, f"{base_url}/docs", tmp_path / "profile")
        assert csp, "the docs page must carry a CSP in this mode"
        dom, log = result.stdout, result.stderr
        assert "swagger-ui" in dom
        assert dom.count('class="opblock ') >= 10, dom[:2000]  # one block per operation
        assert "/api/v1/auth/login" in dom and "/api/v1/users/me" in dom
        assert "authorize" in dom.lower()  # the OAuth2 password flow button
        violations = [line for line in log.splitlines() if "Content Security Policy" in line or "Refused to" in line]
        assert not violations, violations

    @pytest.mark.parametrize("page", ["/redoc", "/docs"])
    @pytest.mark.parametrize("csp_mode", ["strict", "relaxed", "disabled"])
    def test_loads_nothing_from_another_origin(
        self, sqlite_database: str, tmp_path: Path, csp_mode: str, page: str
    ) -> None:
        """Whatever the CSP allows (nothing is blocked with CSP_MODE=disabled), the page asks no other origin
        for anything (every request but the app's own goes to a recording proxy), and violates no CSP."""
        browser = require_chromium()
        with RecordingProxy() as proxy, uvicorn_server(sqlite_database, CSP_MODE=csp_mode) as base_url:
            result = render(browser, f"{base_url}{page}", tmp_path / "profile", f"--proxy-server={proxy.address}")
        if page == "/redoc":
            assert "redocly logo" in result.stdout  # ReDoc rendered its side menu, image included
            assert "/api/v1/auth/login" in result.stdout
        else:
            assert result.stdout.count('class="opblock ') >= 10
        foreign = sorted({host for host in map(host_of, proxy.hosts) if not BROWSER_SERVICES.search(host)})
        assert foreign == [], proxy.hosts
        violations = [
            line for line in result.stderr.splitlines() if "Content Security Policy" in line or "Refused to" in line
        ]
        assert not violations, violations
