"""create_app(): settings, middleware, error handlers, routers, lifespan."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.admin.bootstrap import bootstrap_first_superuser
from app.admin.search import EmailSample
from app.api import API_ROUTERS
from app.auth.cookies import cross_site_origins
from app.auth.supabase import create_jwks_client
from app.auth.tokens import TokenCache
from app.core.body_limit import BodyLimitMiddleware
from app.core.data import Data
from app.core.db import create_engine, create_sessionmaker
from app.core.docs import install_docs
from app.core.driver import Driver
from app.core.errors import install_error_handlers
from app.core.heap import settle_heap
from app.core.logging import configure_logging
from app.core.middleware import RequestContextMiddleware
from app.core.openapi import install_openapi
from app.core.rate_limit import RateLimiter, RateLimitMiddleware
from app.core.routing import include_flat
from app.core.settings import ConfigurationError, Settings, get_settings
from app.health.router import router as health_router
from app.integrations.email import create_sender
from app.state import AppState, Database, install

logger = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    try:
        settings.check_production()
    except ConfigurationError as exc:
        # One clear line and a non-zero exit, not a traceback (uvicorn lets SystemExit through).
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    configure_logging(settings.LOG_LEVEL, bool(settings.LOG_JSON))

    state = AppState(
        settings=settings,
        rate_limiter=RateLimiter(settings.RATE_LIMIT_STORAGE_URI, key_prefix=settings.RATE_LIMIT_KEY_PREFIX),
        email_sender=create_sender(settings),
        tokens=TokenCache(settings),
        email_sample=EmailSample(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        driver = await Driver.create(engine, settings)  # the asyncpg pool of app/core/data.py (PostgreSQL)
        state.database = Database(engine=engine, sessionmaker=create_sessionmaker(engine), data=Data(engine, driver))
        state.jwks = create_jwks_client(settings)  # Supabase signing keys: fetched on first use, cached
        if foreign := cross_site_origins(settings):
            logger.warning(
                "AUTH_REFRESH_COOKIE is on, but these BACKEND_CORS_ORIGINS are on another site than this API "
                "(HOST=%s): %s. A browser page there signs in, but never sends the SameSite=Strict refresh cookie "
                "back: its refreshes answer 401. Serve the page and the API from one site (docs/AUTH.md).",
                settings.HOST,
                ", ".join(foreign),
            )
        try:
            await bootstrap_first_superuser(state.data, settings)  # logs and raises on failure
            if settings.GC_TUNING:
                settle_heap()  # after start-up: what exists now is never walked by the collector again
            yield
        finally:
            if state.jwks is not None:
                await state.jwks.aclose()
            await state.rate_limiter.aclose()
            if driver is not None:
                await driver.close()
            await engine.dispose()
            state.database = None

    app = FastAPI(
        title=settings.APP_NAME,
        version=settings.VERSION,
        openapi_url=f"{settings.API_V1_PREFIX}/openapi.json",
        lifespan=lifespan,
        docs_url=None,  # self-hosted docs, see app/core/docs.py
        redoc_url=None,
    )
    install(app, state)

    install_error_handlers(app)
    # Innermost first: rate limits and the body limit inside CORS (a 429 stays readable by the browser) and
    # inside the request context (client IP set, security headers on the 429 too).
    app.add_middleware(RateLimitMiddleware, settings=settings, limiter=state.rate_limiter, tokens=state.tokens)
    app.add_middleware(BodyLimitMiddleware, max_body_size=settings.MAX_BODY_SIZE)  # before any body is read
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.BACKEND_CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Request-ID",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-CSRF-Token",
            "Idempotent-Replayed",
        ],
    )
    app.add_middleware(RequestContextMiddleware, settings=settings)

    install_docs(app)
    include_flat(app, health_router)  # flat route lists: app/core/routing.py
    for router in API_ROUTERS:
        include_flat(app, router, prefix=settings.API_V1_PREFIX)
    install_openapi(app, settings.API_V1_PREFIX)  # every operation's error answers, from the code (core/raises.py)
    return app
