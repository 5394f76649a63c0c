"""A third-party generator trusts the contract: openapi-python-client generates a Python client from the committed
frontend-contract/openapi.json, and a short flow runs through it against the live API (uvicorn). Every answer,
the errors included, parses into its typed model: the client is built with ``raise_on_unexpected_status=True``,
so an answer its document does not declare would raise ``UnexpectedStatus``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import BACKEND_DIR
from tests.core.uvicorn_server import uvicorn_server
from tests.factories import DEFAULT_PASSWORD

OPENAPI = BACKEND_DIR.parent / "frontend-contract" / "openapi.json"
PACKAGE = "generated_org_api_client"
CONFIG = f"project_name_override: generated-org-api-client\npackage_name_override: {PACKAGE}\npost_hooks: []\n"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated package, importable for this module's tests."""
    root = tmp_path_factory.mktemp("generated-client")
    (root / "config.yaml").write_text(CONFIG, encoding="utf-8")
    generator = Path(sys.executable).parent / "openapi-python-client"
    command = [str(generator), "generate", "--path", str(OPENAPI), "--config", str(root / "config.yaml")]
    command += ["--meta", "none", "--output-path", str(root / PACKAGE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr  # every schema understood
    sys.path.insert(0, str(root))
    try:
        yield root / PACKAGE
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def api_url(database_url: str) -> Iterator[str]:
    with uvicorn_server(database_url) as url:
        yield url


def test_a_flow_through_the_generated_client(generated: Path, api_url: str, app: FastAPI) -> None:
    """``app`` is requested so that the rows the flow made are cleaned after it."""
    models = module("models")
    client_module = module("client")
    register = module("api.auth.auth_register")
    login = module("api.auth.auth_login")
    me = module("api.users.users_me_get")
    reset = module("api.auth.auth_password_reset_request")
    health = module("api.health.health_check")

    client: Any = client_module.Client(base_url=api_url, raise_on_unexpected_status=True)
    email = f"generated-{uuid.uuid4().hex[:8]}@example.com"

    created = register.sync_detailed(client=client, body=models.RegisterRequest(email=email, password=DEFAULT_PASSWORD))
    assert created.status_code == 201 and isinstance(created.parsed, models.UserRead)
    assert created.parsed.auth_provider == models.AuthProvider.LOCAL

    # The errors parse into their typed models, codes as enums.
    taken = register.sync_detailed(client=client, body=models.RegisterRequest(email=email, password=DEFAULT_PASSWORD))
    assert taken.status_code == 409 and isinstance(taken.parsed, models.EmailTakenError)
    assert taken.parsed.code == models.EmailTakenErrorCode.EMAIL_TAKEN
    weak = register.sync_detailed(
        client=client, body=models.RegisterRequest(email=f"x-{email}", password="password123")
    )
    assert weak.status_code == 422 and isinstance(weak.parsed, models.HTTPValidationError)
    assert weak.parsed.code == models.HTTPValidationErrorCode.VALIDATION_ERROR
    assert [(item.loc, item.msg) for item in weak.parsed.detail] == [
        (["body", "password"], "This password is too common.")
    ]
    wrong = login.sync_detailed(client=client, body=models.LoginRequest(email=email, password="Wrong-Password-42"))
    assert wrong.status_code == 401 and isinstance(wrong.parsed, models.AuthLogin401Error)
    assert wrong.parsed.code == models.AuthLogin401ErrorCode.INVALID_CREDENTIALS

    signed_in = login.sync_detailed(client=client, body=models.LoginRequest(email=email, password=DEFAULT_PASSWORD))
    assert signed_in.status_code == 200 and isinstance(signed_in.parsed, models.TokenPair)
    authenticated: Any = client_module.AuthenticatedClient(
        base_url=api_url, token=signed_in.parsed.access_token, raise_on_unexpected_status=True
    )
    mine = me.sync_detailed(client=authenticated)
    assert mine.status_code == 200 and isinstance(mine.parsed, models.UserMe) and mine.parsed.email == email

    stranger: Any = client_module.AuthenticatedClient(
        base_url=api_url, token="not-a-token", raise_on_unexpected_status=True
    )
    refused = me.sync_detailed(client=stranger)
    assert refused.status_code == 401 and isinstance(refused.parsed, models.UsersMeGet401Error)
    assert refused.parsed.code == models.UsersMeGet401ErrorCode.INVALID_TOKEN

    accepted = reset.sync_detailed(client=client, body=models.PasswordResetRequest(email=email))
    assert accepted.status_code == 202 and isinstance(accepted.parsed, models.Accepted)
    assert health.sync(client=client).status == models.HealthReadStatus.OK
