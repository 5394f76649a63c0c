"""The pins that keep known advisories out (docs/SECURITY.md): checked against the lock file CI installs."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from tests.conftest import BACKEND_DIR

LOCKED = {p["name"]: p["version"] for p in tomllib.loads((BACKEND_DIR / "uv.lock").read_text())["package"]}


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


class TestPins:
    def test_pyjwt_has_the_fixes(self) -> None:
        # CVE-2026-48526 (a JWK accepted as an HMAC secret) fixed in 2.13.0; GHSA-752w-5fwx-jx9f (crit) in 2.12.0.
        assert _release(LOCKED["pyjwt"]) >= (2, 13, 0)
        assert _release(version("pyjwt")) >= (2, 13, 0)

    def test_libpass_not_passlib(self) -> None:
        # passlib 1.7.4 cannot hash with bcrypt 5; libpass installs the same `passlib` package and works.
        assert "passlib" not in LOCKED
        assert "libpass" in LOCKED
        import passlib

        assert _release(passlib.__version__) >= (1, 9, 0)
