from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.settings import ConfigurationError, CspMode, Settings

BACKEND_DIR = Path(__file__).resolve().parents[2]
CONTRACT_NAMES = {
    "ENVIRONMENT": "development",
    "SECRET_KEY": "",
    "ACCESS_TOKEN_EXPIRE_MINUTES": 15,
    "REFRESH_TOKEN_EXPIRE_DAYS": 7,
    "SUPABASE_URL": None,
    "SUPABASE_JWT_SECRET": None,
    "SUPABASE_JWKS_URL": None,
    "FIRST_SUPERUSER_EMAIL": None,
    "FIRST_SUPERUSER_PASSWORD": None,
    "CSP_MODE": CspMode.RELAXED,
    "RATE_LIMIT_ENABLED": True,
    "RATE_LIMIT_STORAGE_URI": "memory://",
    "REFRESH_REUSE_GRACE_SECONDS": 10,
    "SUPABASE_ALLOW_ANONYMOUS": False,
    "EMAIL_BACKEND": "console",
    "SMTP_HOST": "localhost",
    "SMTP_PORT": 25,
    "SMTP_USERNAME": None,
    "SMTP_PASSWORD": None,
    "SMTP_TLS": "none",
    "EMAIL_FROM": "no-reply@localhost",
    "FRONTEND_URL": "http://localhost:5173",
    "AUTH_REFRESH_COOKIE": False,
    "TRUSTED_PROXIES": [],
    "DEFAULT_CREDITS": 1000,
}


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class TestDefaults:
    def test_every_contract_name_has_its_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in [*CONTRACT_NAMES, "DATABASE_URL", "BACKEND_CORS_ORIGINS"]:
            monkeypatch.delenv(name, raising=False)
        settings = make()
        for name, default in CONTRACT_NAMES.items():
            assert getattr(settings, name) == default, name
        assert settings.DATABASE_URL.startswith("sqlite+aiosqlite:///")
        assert settings.DATABASE_URL.endswith("backend/app.db")
        assert settings.BACKEND_CORS_ORIGINS
        for limit in ("RATE_LIMIT_LOGIN", "RATE_LIMIT_REGISTER", "RATE_LIMIT_REFRESH", "RATE_LIMIT_DEFAULT"):
            assert "/" in getattr(settings, limit)

    def test_csp_strict_by_default_in_production(self) -> None:
        assert make(ENVIRONMENT="production", SECRET_KEY="k" * 40).CSP_MODE == CspMode.STRICT

    def test_jwks_url_defaults_from_supabase_url(self) -> None:
        settings = make(SUPABASE_URL="https://abc.supabase.co/")
        assert settings.SUPABASE_JWKS_URL == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
        assert settings.supabase_issuer == "https://abc.supabase.co/auth/v1"

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ('["https://a.example","https://b.example"]', ["https://a.example", "https://b.example"]),
            ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
            ("", []),
        ],
    )
    def test_cors_origins_json_or_comma(self, monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
        monkeypatch.setenv("BACKEND_CORS_ORIGINS", raw)
        assert expected == make().BACKEND_CORS_ORIGINS

    def test_plain_postgres_url_gets_asyncpg(self) -> None:
        assert make(DATABASE_URL="postgresql://u@h/db").DATABASE_URL == "postgresql+asyncpg://u@h/db"
        assert make(DATABASE_URL="postgres://u@h/db").DATABASE_URL == "postgresql+asyncpg://u@h/db"


class TestProductionRefusals:
    @pytest.mark.parametrize(
        "values",
        [
            {},
            {"SECRET_KEY": "short"},
            {"SECRET_KEY": "k" * 40, "CSP_MODE": "disabled"},
            {"SECRET_KEY": "k" * 40, "BACKEND_CORS_ORIGINS": "*"},
        ],
        ids=["no-secret", "short-secret", "csp-disabled", "wildcard-cors"],
    )
    def test_refused(self, values: dict[str, str]) -> None:
        with pytest.raises(ConfigurationError):
            make(ENVIRONMENT="production", **values).check_production()

    def test_accepted(self) -> None:
        make(
            ENVIRONMENT="production", SECRET_KEY="k" * 40, BACKEND_CORS_ORIGINS="https://app.example"
        ).check_production()

    def test_process_exits_with_one_line(self) -> None:
        env = {"ENVIRONMENT": "production", "PATH": "/usr/bin:/bin", "SECRET_KEY": "short"}
        result = subprocess.run(
            [sys.executable, "-c", "from app.main import create_app; create_app()"],
            cwd=BACKEND_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == ["error: Refusing to start in production: SECRET_KEY must be set to at least 32 characters."]
        assert "Traceback" not in result.stderr
