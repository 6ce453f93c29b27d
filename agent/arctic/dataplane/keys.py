"""The peer's Ed25519 identity, as the data plane needs it: a private key to sign with, raw public keys to compare.

The identity file belongs to the cluster layer (``arctic.cluster.identity``); when that module is available we
use its loader so there is one reader of the key format. Until then (and as a fallback) the file is read here as
an unencrypted PKCS8 PEM, which is the documented format.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class IdentityKeyError(ValueError):
    """The identity key file is missing or is not an Ed25519 private key."""


def load_identity_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        from arctic.cluster.identity import load_identity  # type: ignore[import-not-found]
    except ImportError:
        load_identity = None
    if load_identity is not None:
        try:
            key = load_identity(path).private_key
        except Exception as err:  # the cluster layer's own error types are not known here
            raise IdentityKeyError(f"identity key {path}: {err}") from err
        if isinstance(key, Ed25519PrivateKey):
            return key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise IdentityKeyError(f"cannot read identity key {path}: {err.strerror or err}") from None
    except (ValueError, TypeError) as err:
        raise IdentityKeyError(f"identity key {path} is not an unencrypted PKCS8 PEM key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityKeyError(f"identity key {path} is not an Ed25519 key")
    return key


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(key)).decode()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
