# Every target installs what it needs: uv from PyPI when missing, then the locked dependencies.
# Python is never downloaded (UV_PYTHON_DOWNLOADS=never): the machine's Python 3.11 is used.
SHELL := /bin/bash
BACKEND := backend
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_WORKERS ?= 2

.PHONY: help install run test test-postgres test-sqlite lint format migrate migration bench contract fuzz audit cleanup superuser

help:
	@grep -E '^[a-z-]+:' Makefile | cut -d: -f1

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==0.13.9" || python3 -m pip install --quiet "uv==0.13.9"

install: $(UV)
	@cd $(BACKEND) && $$(command -v uv || echo $(UV)) sync --locked --quiet

migrate: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync alembic upgrade head

run: migrate
	cd $(BACKEND) && HOST=$(HOST) PORT=$(PORT) $$(command -v uv || echo $(UV)) run --no-sync python -m app

# PostgreSQL when reachable (TEST_DATABASE=postgres makes it required), SQLite otherwise, said loudly.
test: install
	@cd $(BACKEND) && if [ -z "$$TEST_DATABASE" ]; then \
	  if $$(command -v uv || echo $(UV)) run --no-sync python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
	    export TEST_DATABASE=postgres; \
	  else \
	    echo "################################################################"; \
	    echo "## PostgreSQL is not reachable on 127.0.0.1:5432:             ##"; \
	    echo "## FALLING BACK TO SQLITE. Concurrency tests will be skipped. ##"; \
	    echo "################################################################"; \
	    export TEST_DATABASE=sqlite; \
	  fi; \
	fi; \
	echo "make test: database=$$TEST_DATABASE"; \
	$$(command -v uv || echo $(UV)) run --no-sync pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-postgres:
	@TEST_DATABASE=postgres $(MAKE) --no-print-directory test

test-sqlite:
	@TEST_DATABASE=sqlite $(MAKE) --no-print-directory test

lint: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync ruff check . && \
	  $$(command -v uv || echo $(UV)) run --no-sync ruff format --check . && \
	  $$(command -v uv || echo $(UV)) run --no-sync mypy app tests

format: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync ruff check --fix . && \
	  $$(command -v uv || echo $(UV)) run --no-sync ruff format .

migration: install
	@test -n "$(m)" || (echo 'usage: make migration m="what changed"' && exit 2)
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync alembic revision --autogenerate -m "$(m)"

# Retention (app/cleanup.py): CLEANUP_ARGS="--batch-size 500 --pause-ms 20" to go gentler on a busy database.
cleanup: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync python -m app cleanup $(CLEANUP_ARGS)

superuser: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync python -m app create-superuser

bench: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync python -m bench $(BENCH)

# Regenerates frontend-contract/openapi.json from the app, then src/schema.d.ts from it (npm ci when needed).
contract: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) run --no-sync python -m app.contract ../frontend-contract/openapi.json
	@command -v npm >/dev/null 2>&1 || { echo "make contract: npm is missing (install Node 20): src/schema.d.ts NOT regenerated" >&2; exit 1; }
	cd frontend-contract && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run --silent generate

fuzz: install
	cd $(BACKEND) && FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $$(command -v uv || echo $(UV)) run --no-sync pytest -n $(PYTEST_WORKERS) -m fuzz tests/fuzz

# pip-audit over the locked runtime dependencies (exact pins, so no resolution and no install); it needs the
# PyPI/OSV vulnerability data, so it runs in the GitHub workflow's audit job. See docs/SECURITY.md.
audit: install
	cd $(BACKEND) && $$(command -v uv || echo $(UV)) export --locked --no-dev --no-emit-project --no-hashes \
	    --format requirements-txt -o /tmp/requirements-audit.txt && \
	  $$(command -v uv || echo $(UV)) tool run --from "pip-audit==2.10.1" pip-audit --strict --no-deps --disable-pip \
	    --progress-spinner off -r /tmp/requirements-audit.txt
