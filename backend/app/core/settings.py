"""Application settings: every configuration name of the API contract, read from the environment."""

from __future__ import annotations

import json
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.state import state_of

BACKEND_DIR = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE_URL = f"sqlite+aiosqlite:///{BACKEND_DIR / 'app.db'}"
MIN_SECRET_KEY_LENGTH = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class CspMode(StrEnum):
    STRICT = "strict"
    RELAXED = "relaxed"
    DISABLED = "disabled"


class EmailBackend(StrEnum):
    CONSOLE = "console"
    SMTP = "smtp"


class SmtpTls(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    SSL = "ssl"


class ConfigurationError(RuntimeError):
    """Raised when the settings are unsafe for the chosen environment."""


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=BACKEND_DIR / ".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    APP_NAME: str = "Organizations API"  # the OpenAPI title and the issuer in TOTP URIs
    VERSION: str = "0.1.0"
    API_V1_PREFIX: str = "/api/v1"
    ENVIRONMENT: Environment = Environment.DEVELOPMENT
    # Where `python -m app` (make run) serves; also the API's own host when cookie mode checks the CORS origins'
    # sites (app/auth/cookies.py). 0.0.0.0 / :: (every interface, e.g. behind a proxy) names no site.
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)

    DATABASE_URL: str = DEFAULT_SQLITE_URL
    DATABASE_POOL_SIZE: int = Field(default=5, ge=1)  # the engine's: /health, the export's snapshot, the CLI, SQLite
    DATABASE_MAX_OVERFLOW: int = Field(default=0, ge=0)
    DATABASE_POOL_TIMEOUT: float = Field(default=10.0, gt=0)
    DATABASE_DRIVER_POOL_SIZE: int = Field(default=10, ge=1)  # the asyncpg pool every request uses (app/core/data.py)
    DATABASE_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0)
    # PgBouncer / Supabase pooler in transaction mode: no prepared-statement caches.
    DATABASE_PGBOUNCER: bool = False
    DATABASE_ECHO: bool = False

    SECRET_KEY: str = ""
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=15, ge=1)
    REFRESH_TOKEN_EXPIRE_DAYS: int = Field(default=7, ge=1)
    REFRESH_REUSE_GRACE_SECONDS: int = Field(default=10, ge=0)
    EMAIL_CHANGE_EXPIRE_HOURS: int = Field(default=1, ge=1)
    MAX_SESSIONS_PER_USER: int = Field(default=50, ge=1)  # a new login beyond it ends the least recently used
    JWT_ISSUER: str = "organizations-api"
    JWT_AUDIENCE: str = "organizations-api"
    ADMIN_REQUIRE_MFA: bool = False  # every /admin path needs an aal2 token
    MFA_TOKEN_EXPIRE_SECONDS: int = Field(default=300, ge=30)
    MFA_MAX_FAILED_ATTEMPTS: int = Field(default=5, ge=1)  # wrong codes per mfa_token, then it is spent

    SUPABASE_URL: str | None = None
    SUPABASE_JWT_SECRET: str | None = None
    SUPABASE_JWKS_URL: str | None = None
    SUPABASE_ALLOW_ANONYMOUS: bool = False
    SUPABASE_JWKS_CACHE_SECONDS: int = Field(default=600, ge=1)
    SUPABASE_JWKS_MIN_REFETCH_SECONDS: int = Field(default=30, ge=0)

    FIRST_SUPERUSER_EMAIL: str | None = None
    FIRST_SUPERUSER_PASSWORD: str | None = None

    BACKEND_CORS_ORIGINS: Annotated[list[str], NoDecode] = [
        "http://localhost:5173",
        "http://127.0.0.1:5173",
        "http://localhost:3000",
        "http://127.0.0.1:3000",
    ]
    CSP_MODE: CspMode | None = None
    TRUSTED_PROXIES: Annotated[list[str], NoDecode] = []
    MAX_BODY_SIZE: int = Field(default=1024 * 1024, ge=1024)

    RATE_LIMIT_ENABLED: bool = True
    RATE_LIMIT_STORAGE_URI: str = "memory://"
    RATE_LIMIT_KEY_PREFIX: str = "ratelimit"  # Redis key prefix, so several apps can share one database
    RATE_LIMIT_LOGIN: str = "30/minute"
    RATE_LIMIT_LOGIN_EMAIL: str = "10/minute"
    RATE_LIMIT_REGISTER: str = "20/minute"
    RATE_LIMIT_REFRESH: str = "60/minute"
    RATE_LIMIT_PASSWORD: str = "10/minute"
    RATE_LIMIT_EMAIL: str = "10/minute"
    RATE_LIMIT_MFA: str = "10/minute"  # /auth/mfa/*, per IP and per user (a 6-digit code must not be guessable)
    RATE_LIMIT_EXPORT: str = "5/minute"  # GET /users/me/export, per user
    RATE_LIMIT_DEFAULT: str = "600/minute"

    EMAIL_BACKEND: EmailBackend = EmailBackend.CONSOLE
    SMTP_HOST: str = "localhost"
    SMTP_PORT: int = 25
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: str | None = None
    SMTP_TLS: SmtpTls = SmtpTls.NONE
    SMTP_TIMEOUT: float = 10.0
    EMAIL_FROM: str = "no-reply@localhost"
    FRONTEND_URL: str = "http://localhost:5173"
    EMAIL_VERIFY_EXPIRE_HOURS: int = Field(default=48, ge=1)
    PASSWORD_RESET_EXPIRE_HOURS: int = Field(default=1, ge=1)
    INVITATION_EXPIRE_DAYS: int = Field(default=7, ge=1)

    AUTH_REFRESH_COOKIE: bool = False

    DEFAULT_CREDITS: int = Field(default=1000, ge=0)

    AUDIT_RETENTION_DAYS: int = Field(default=365, ge=1)  # cleanup deletes older audit events (app/cleanup.py)

    GC_TUNING: bool = True  # freeze the start-up heap, collect the young generation less often (app/core/heap.py)

    LOG_LEVEL: str = "INFO"
    LOG_JSON: bool | None = None

    @field_validator("BACKEND_CORS_ORIGINS", "TRUSTED_PROXIES", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("DATABASE_URL")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; this app speaks asyncpg.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if self.CSP_MODE is None:
            production = self.ENVIRONMENT == Environment.PRODUCTION
            self.CSP_MODE = CspMode.STRICT if production else CspMode.RELAXED
        if self.LOG_JSON is None:
            self.LOG_JSON = self.ENVIRONMENT == Environment.PRODUCTION
        if self.SUPABASE_URL:
            self.SUPABASE_URL = self.SUPABASE_URL.rstrip("/")
            if not self.SUPABASE_JWKS_URL:
                self.SUPABASE_JWKS_URL = f"{self.SUPABASE_URL}/auth/v1/.well-known/jwks.json"
        self.FRONTEND_URL = self.FRONTEND_URL.rstrip("/")
        return self

    @property
    def is_production(self) -> bool:
        return self.ENVIRONMENT == Environment.PRODUCTION

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")

    @property
    def supabase_issuer(self) -> str | None:
        return f"{self.SUPABASE_URL}/auth/v1" if self.SUPABASE_URL else None

    @property
    def supabase_enabled(self) -> bool:
        return bool(self.SUPABASE_JWT_SECRET or self.SUPABASE_JWKS_URL)

    @property
    def csp_mode(self) -> CspMode:
        return self.CSP_MODE or CspMode.RELAXED

    def check_production(self) -> None:
        """Refuse settings that are unsafe in production (one clear message)."""
        if not self.is_production:
            return
        problems = []
        if len(self.SECRET_KEY) < MIN_SECRET_KEY_LENGTH:
            problems.append(f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} characters")
        if self.CSP_MODE == CspMode.DISABLED:
            problems.append("CSP_MODE=disabled is not allowed")
        if any("*" in origin for origin in self.BACKEND_CORS_ORIGINS):
            problems.append("BACKEND_CORS_ORIGINS must not contain a wildcard")
        if problems:
            raise ConfigurationError("Refusing to start in production: " + "; ".join(problems) + ".")


def load_settings(**overrides: Any) -> Settings:
    """Build settings, check them, and fill in a per-process secret outside production."""
    settings = Settings(**overrides)
    settings.check_production()
    if not settings.SECRET_KEY:
        settings.SECRET_KEY = secrets.token_urlsafe(48)
    return settings


@lru_cache
def get_settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        import sys

        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests build apps with their own), not ``get_settings()``'s."""
    return state_of(request.app).settings


SettingsDep = Annotated[Settings, Depends(app_settings)]
