"""No Docker engine runs here: the compose files, the Dockerfile and the CI workflow are checked by parsing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "backend"
EXTRA_ENV = {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "HOST", "PORT"}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (BACKEND / "Dockerfile").read_text()


class TestDockerfile:
    def test_multi_stage_non_root_healthcheck(self, dockerfile: str) -> None:
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", dockerfile, re.MULTILINE)
        assert stages == ["builder", "runtime"]
        assert re.search(r"^USER\s+app$", dockerfile, re.MULTILINE)
        assert "HEALTHCHECK" in dockerfile and "/health/live" in dockerfile
        assert "uv sync --locked --no-dev" in dockerfile
        assert "UV_PYTHON_DOWNLOADS=never" in dockerfile

    def test_migrates_before_serving(self, dockerfile: str) -> None:
        cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
        assert cmd.index("alembic upgrade head") < cmd.index("uvicorn app.main:create_app --factory")

    def test_copies_what_exists(self, dockerfile: str) -> None:
        for line in dockerfile.splitlines():
            if line.startswith("COPY") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (BACKEND / source).exists(), source

    def test_exposed_port_matches_compose(self, dockerfile: str) -> None:
        exposed = re.search(r"^EXPOSE\s+(\d+)", dockerfile, re.MULTILINE)
        assert exposed is not None
        api = load("docker-compose.yml")["services"]["api"]
        assert any(port.endswith(f":{exposed.group(1)}") for port in api["ports"])


class TestCompose:
    def test_services_and_healthchecks(self) -> None:
        services = load("docker-compose.yml")["services"]
        assert set(services) == {"api", "db", "redis"}
        for name, service in services.items():
            assert "healthcheck" in service, name
        for dependency in ("db", "redis"):
            assert services["api"]["depends_on"][dependency]["condition"] == "service_healthy"
        assert services["api"]["build"]["dockerfile"] == "Dockerfile"
        assert (ROOT / services["api"]["build"]["context"] / "Dockerfile").exists()

    @pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.dev.yml"])
    def test_environment_names_are_settings(self, name: str) -> None:
        environment = load(name)["services"]["api"]["environment"]
        unknown = set(environment) - set(Settings.model_fields) - EXTRA_ENV
        assert not unknown, f"{name} sets names the app does not read: {unknown}"

    def test_production_stack_uses_postgres_and_redis(self) -> None:
        environment = load("docker-compose.yml")["services"]["api"]["environment"]
        assert environment["ENVIRONMENT"] == "production"
        assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["DATABASE_URL"].split("@")[1].startswith("db:5432")
        assert environment["RATE_LIMIT_STORAGE_URI"].startswith("redis://redis:6379")
        assert "SECRET_KEY" in environment

    def test_dev_override_builds_an_existing_stage(self, dockerfile: str) -> None:
        api = load("docker-compose.dev.yml")["services"]["api"]
        assert re.search(rf"AS\s+{api['build']['target']}\b", dockerfile)
        assert "--reload" in " ".join(api["command"])
        for volume in api["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists()


class TestContinuousIntegration:
    def test_workflow_runs_lint_and_tests_with_services(self) -> None:
        workflow = load(".github/workflows/ci.yml")
        jobs = workflow["jobs"]
        assert set(jobs["test"]["services"]) == {"postgres", "redis"}
        steps = " ".join(str(step.get("run", "")) for job in jobs.values() for step in job["steps"])
        for command in (
            "make lint",
            "TEST_DATABASE=postgres make test",
            "TEST_DATABASE=sqlite make test",
            "make audit",
        ):
            assert command in steps

    def test_ci_script_runs_the_readme_test_command(self) -> None:
        script = (ROOT / ".ci" / "run").read_text()
        readme = (ROOT / "README.md").read_text()
        assert "make test" in readme and "make run" in readme
        assert "TEST_DATABASE=postgres make test" in script
        assert "make lint" in script
