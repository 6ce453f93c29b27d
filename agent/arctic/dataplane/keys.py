"""The peer's Ed25519 identity as the data plane needs it: a private key to sign with, raw public keys to compare.

The key file and its format belong to the cluster layer (``arctic.cluster.identity``): one reader of the file,
with its checks (mode 0600, PKCS8 PEM, Ed25519). The data plane only turns a refusal into ``IdentityKeyError``,
which its master reports as a configuration error instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from arctic.cluster.identity import IdentityError, load_identity


class IdentityKeyError(ValueError):
    """The identity key file is missing or is not an Ed25519 private key."""


def load_identity_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        return load_identity(path).private_key
    except IdentityError as err:
        raise IdentityKeyError(str(err)) from None


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
