"""What one app instance holds, typed: made by ``create_app`` and its lifespan, read through ``state_of``.

Not Starlette's ``app.state`` bag with attributes added wherever first needed: every field is declared here,
made once, and an attribute that does not exist is a type error instead of an ``AttributeError`` at run time.
Per app, not per process: two apps in one process (tests, a second instance) may hold different settings,
secret keys and databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

if TYPE_CHECKING:  # the domains read their state through this module: import their types only for checking
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from app.admin.search import EmailSample
    from app.auth.jwks import JwksClient
    from app.auth.tokens import TokenCache
    from app.core.data import Data
    from app.core.rate_limit import RateLimiter
    from app.core.settings import Settings
    from app.integrations.email import EmailSender


@dataclass(eq=False, slots=True)
class Database:
    """Made in the lifespan (connections need the running event loop), closed when it ends."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    data: Data  # reads outside the request's transaction (app/core/data.py)


@dataclass(eq=False, slots=True)
class AppState:
    settings: Settings
    rate_limiter: RateLimiter
    email_sender: EmailSender
    tokens: TokenCache  # verified bearer tokens, for authentication and rate limiting (app/auth/tokens.py)
    email_sample: EmailSample  # the admin search's sample of common email pieces (app/admin/search.py)
    jwks: JwksClient | None = None  # Supabase signing keys, made in the lifespan when SUPABASE_JWKS_URL is set
    database: Database | None = None

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the app's lifespan has not started: no database yet")
        return self.database

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.db.sessionmaker

    @property
    def data(self) -> Data:
        return self.db.data


def state_of(app: Starlette) -> AppState:
    state: AppState = app.state.typed
    return state


def install(app: Starlette, state: AppState) -> None:
    app.state.typed = state


async def request_state(request: Request) -> AppState:
    return state_of(request.app)


AppStateDep = Annotated[AppState, Depends(request_state)]
