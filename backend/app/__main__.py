"""``python -m app``: serve the API (migrations are applied by ``make run`` / the container entrypoint).

``python -m app create-superuser --email X [--password Y]`` and ``python -m app cleanup`` are operator
commands (see app/cli.py and docs/ADMIN.md).
"""

from __future__ import annotations

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main())
