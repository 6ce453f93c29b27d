"""Client credentials: ids, secrets, and how secrets are stored.

Secrets are 256 bits from the OS CSPRNG, so a plain SHA-256 digest is a sound way to store them: a
slow password hash (bcrypt, scrypt, argon2) exists to make guessing *low-entropy human passwords*
expensive, and nobody can enumerate 2**256 candidates however fast each guess is. A fast hash also
keeps the token endpoint cheap. The ``sha256:`` prefix leaves room for another scheme later.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random

from arctic.ids import new_id

SECRET_PREFIX = "sec_"
SECRET_BYTES = 32  # 256 bits -> 43 base64url characters
HASH_SCHEME = "sha256:"


def new_client_id() -> str:
    """``cli_<ULID>``."""
    return new_id("cli")


def new_secret() -> str:
    """``sec_`` + 43 base64url characters (32 random bytes). Shown to the operator once, stored hashed."""
    return SECRET_PREFIX + _random.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """``sha256:<hex>``: what the store keeps instead of the secret (see the module docstring for why)."""
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret must be a non-empty string")
    return HASH_SCHEME + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches the stored hash. Constant time; False for anything malformed."""
    if not isinstance(secret, str) or not isinstance(stored, str) or not stored.startswith(HASH_SCHEME):
        return False
    candidate = HASH_SCHEME + hashlib.sha256(secret.encode("utf-8")).hexdigest()
    return hmac.compare_digest(candidate.encode("ascii"), stored.encode("utf-8", "replace"))
