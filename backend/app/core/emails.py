"""The one normal form of an email address: what is stored, compared, looked up and rate-limited.

``normalize_email`` is the whole rule, used by the ``Email`` schema type (app/core/schemas.py), by every
lookup and insert of an address (app/users/service.py), by the per-email rate-limit keys
(app/core/rate_limit.py), and for addresses that arrive from elsewhere (Supabase tokens, settings). Two
spellings of one address (``Victim@EXAMPLE.COM`` in full-width letters, ``victim@example.com``) meet in one
account and one counter, and no spelling escapes a limit.
"""

from __future__ import annotations

import unicodedata

from pydantic.networks import validate_email


def normalize_email(value: str) -> str:
    """NFKC (full-width and other compatibility forms fold to their plain characters), then pydantic's email
    validation (email-validator: IDNA/UTS-46 domain, NFC local part, surrounding spaces and a ``Name <...>``
    wrapper removed), then lower case. Idempotent. Raises ``ValueError`` (pydantic's ``value_error``, with its
    plain message) for anything that is not an address."""
    _name, address = validate_email(unicodedata.normalize("NFKC", value))
    return address.lower()
