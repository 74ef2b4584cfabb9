"""API keys: `dpx_<key id>_<secret>`. Stores keep only the key id, a per-key salt and sha256(salt + secret).

The key id lets a store find the one record to check without scanning (and without keeping anything that
would let a leaked database authenticate); the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "dpx_"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    salt: str  # hex
    digest: str  # hex sha256(salt bytes + secret)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def new_key() -> tuple[str, KeyRecord]:
    """A fresh key (shown to its owner once) and the record a store keeps."""
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    return f"{PREFIX}{key_id}_{secret}", KeyRecord(key_id, salt, _digest(salt, secret))


def split_key(api_key: str) -> tuple[str, str] | None:
    """(key id, secret), or None for anything not shaped like one of our keys."""
    if not api_key.startswith(PREFIX):
        return None
    key_id, sep, secret = api_key[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret:
        return None
    return key_id, secret


def matches(record: KeyRecord, secret: str) -> bool:
    return hmac.compare_digest(record.digest, _digest(record.salt, secret))


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison for the admin key."""
    return hmac.compare_digest(given.encode(), expected.encode())
