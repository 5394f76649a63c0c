"""The OpenAPI document that ``frontend-contract/`` is generated from.

``python -m app.contract PATH`` writes it (``make contract`` does, then regenerates the TypeScript types);
``python -m app.contract --check PATH`` exits 1 when PATH differs from what the app produces; without a
PATH the document goes to standard output.

The app is built with fixed settings (no ``.env``, no environment, a fixed key), and the JSON is written
with sorted keys and a 2-space indent, so the same code always gives the same bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.core.settings import Settings

REGENERATE_COMMAND = "make contract"

# Settings that do not depend on the machine: the document must not change with a developer's .env.
CONTRACT_SETTINGS: dict[str, Any] = {
    "_env_file": None,
    "ENVIRONMENT": "test",
    "SECRET_KEY": "contract-generation-key-not-a-secret-0123456789",
    "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
    "EMAIL_BACKEND": "console",
    "LOG_LEVEL": "WARNING",
}


def build_openapi() -> dict[str, Any]:
    """The app's OpenAPI document (the app is only built, never started: no database is touched)."""
    from app.main import create_app  # imported here so that `--help` does not build the app

    app = create_app(Settings(**CONTRACT_SETTINGS))
    return app.openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    if len(paths) > 1 or any(arg.startswith("-") for arg in paths):
        print("usage: python -m app.contract [--check] [PATH]", file=sys.stderr)
        return 2
    document = build_openapi()
    text = render(document)
    if not paths:
        sys.stdout.write(text)
        return 0
    target = Path(paths[0])
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{target} is out of date: run `{REGENERATE_COMMAND}` and commit the result.", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} ({len(document['paths'])} paths)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
