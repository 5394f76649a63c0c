"""``python -m app``: run the server (migrations are applied by ``make run`` / the container entrypoint)."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
