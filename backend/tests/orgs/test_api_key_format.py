"""The API key format: ``oak_<prefix>_<secret><tag>``, 256 bits of secret, an HMAC tag that refuses altered or
guessed keys without the database, and a keyed hash as the only stored form (app/core/security.py)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core import security
from app.core.settings import Settings
from tests.conftest import make_settings

# --- the key itself -------------------------------------------------------------------------------------


class TestKeyFormat:
    def test_format_and_entropy(self, settings: Settings) -> None:
        prefix, key = security.new_api_key(settings)
        assert key.startswith(f"oak_{prefix}_")
        assert len(key) == security.API_KEY_LENGTH
        secret = key[len(f"oak_{prefix}_") : -security.API_KEY_TAG_CHARS]
        assert len(secret) * 6 >= 256  # token_urlsafe(32): 43 base64url characters
        assert security.parse_api_key(settings, key) == prefix

    def test_every_key_differs(self, settings: Settings) -> None:
        keys = {security.new_api_key(settings)[1] for _ in range(200)}
        assert len(keys) == 200
        assert len({k[4:16] for k in keys}) == 200

    @pytest.mark.parametrize("change", ["secret", "tag", "prefix", "short", "long", "scheme"])
    def test_altered_keys_are_refused_without_the_database(self, settings: Settings, change: str) -> None:
        _, key = security.new_api_key(settings)
        flip = {"A": "B"}.get(key[30], "A")
        altered = {
            "secret": key[:30] + flip + key[31:],
            "tag": key[:-1] + ("A" if key[-1] != "A" else "B"),
            "prefix": key[:4] + ("0" if key[4] != "0" else "1") + key[5:],
            "short": key[:-1],
            "long": key + "x",
            "scheme": "oat_" + key[4:],
        }[change]
        assert security.parse_api_key(settings, altered) is None

    def test_another_secret_key_makes_no_valid_keys(self, settings: Settings, base_settings: dict[str, Any]) -> None:
        other = make_settings(base_settings, SECRET_KEY="another-secret-key-that-is-long-enough-987654")
        _, key = security.new_api_key(other)
        assert security.parse_api_key(settings, key) is None

    def test_stored_hash_is_keyed(self, settings: Settings) -> None:
        _, key = security.new_api_key(settings)
        stored = security.api_key_hash(settings, key)
        assert key not in stored and len(stored) == 64
        assert security.api_key_matches(settings, key, stored)
        assert not security.api_key_matches(settings, key[:-1] + ("x" if key[-1] != "x" else "y"), stored)
