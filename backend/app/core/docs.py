"""Self-hosted /docs (Swagger UI 5) and /redoc: every script, style and image comes from this app, and no
page has an inline script, so they render offline and under the strict docs CSP (app/core/middleware.py).

Assets: the Swagger UI and ReDoc bundles shipped by fastapi-offline, served under /docs/static (ReDoc's from
/docs/redoc.js, without its one remote image); the Swagger
start-up code is a file (/docs/init.js) configured through data- attributes; the OAuth2 redirect page loads
FastAPI's own redirect script from /docs/oauth2-redirect.js. Swagger's Authorize button uses the OAuth2
password flow declared by the auth dependency (tokenUrl /api/v1/auth/token).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
STATIC_URL = "/docs/static"
INIT_JS_URL = "/docs/init.js"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
OAUTH2_REDIRECT_JS_URL = "/docs/oauth2-redirect.js"

REDOC_JS_URL = "/docs/redoc.js"

VENDOR_DIR = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, swagger-ui.css, redoc
ASSETS_DIR = Path(__file__).parent / "docs_assets"
JS_CACHE = {"Cache-Control": "public, max-age=3600"}
# The ReDoc bundle shows Redocly's logo from their CDN in its side menu ("API docs by Redocly"): it is served
# with that image replaced by an empty inline one (data:, which every CSP_MODE allows), so /redoc loads
# nothing from another origin whatever the CSP says. The vendored bundle is fixed by the lock file; a new
# one with another remote asset fails tests/core/test_docs.py.
REMOTE_ASSET = re.compile(r"""(["'])https?://cdn\.redoc\.ly/[^"']*\1""")
EMPTY_IMAGE = "data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"


def _redoc_script() -> str:
    bundle = (VENDOR_DIR / "redoc.standalone.js").read_text(encoding="utf-8")
    return REMOTE_ASSET.sub(lambda match: f"{match[1]}{EMPTY_IMAGE}{match[1]}", bundle)


def _redirect_script() -> str:
    page = bytes(get_swagger_ui_oauth2_redirect_html().body).decode()
    match = re.search(r"<script>(.*)</script>", page, re.DOTALL)
    if match is None:  # pragma: no cover (a FastAPI upgrade changed the page)
        raise RuntimeError("FastAPI's OAuth2 redirect page has no script to serve")
    return match.group(1)


SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{root}{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{root}{static}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}{openapi}" data-oauth2-redirect-url="{root}{redirect}"></div>
<script src="{root}{static}/swagger-ui-bundle.js"></script>
<script src="{root}{init}"></script>
</body>
</html>
"""

REDOC_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{root}{static}/favicon.png">
</head>
<body>
<noscript>ReDoc needs JavaScript.</noscript>
<redoc spec-url="{root}{openapi}"></redoc>
<script src="{root}{redoc_js}"></script>
</body>
</html>
"""

REDIRECT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Swagger UI: OAuth2 Redirect</title></head>
<body><script src="{root}{script}"></script></body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Add the docs routes to an app created with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or ""
    title = html.escape(app.title)
    redirect_js = _redirect_script()
    redoc_js = _redoc_script()

    def _root(request: Request) -> str:
        return html.escape(str(request.scope.get("root_path", "")).rstrip("/"))

    app.mount(STATIC_URL, StaticFiles(directory=VENDOR_DIR), name="docs-static")

    @app.api_route(DOCS_URL, methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: link checkers, monitors
    async def swagger_ui(request: Request) -> HTMLResponse:
        return HTMLResponse(
            SWAGGER_PAGE.format(
                title=title,
                root=_root(request),
                static=STATIC_URL,
                openapi=openapi_url,
                redirect=OAUTH2_REDIRECT_URL,
                init=INIT_JS_URL,
            )
        )

    @app.get(INIT_JS_URL, include_in_schema=False)
    async def swagger_init() -> FileResponse:
        return FileResponse(ASSETS_DIR / "swagger-init.js", media_type="text/javascript", headers=JS_CACHE)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_oauth2_redirect(request: Request) -> HTMLResponse:
        return HTMLResponse(REDIRECT_PAGE.format(root=_root(request), script=OAUTH2_REDIRECT_JS_URL))

    @app.get(OAUTH2_REDIRECT_JS_URL, include_in_schema=False)
    async def swagger_oauth2_redirect_js() -> Response:
        return Response(redirect_js, media_type="text/javascript", headers=JS_CACHE)

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript", headers=JS_CACHE)

    @app.api_route(REDOC_URL, methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: link checkers, monitors
    async def redoc(request: Request) -> HTMLResponse:
        return HTMLResponse(
            REDOC_PAGE.format(
                title=title, root=_root(request), static=STATIC_URL, openapi=openapi_url, redoc_js=REDOC_JS_URL
            )
        )
