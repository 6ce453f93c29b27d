"""Access tokens: short-lived JWTs signed by the issuing peer's Ed25519 identity (EdDSA).

Claims: ``iss`` = peer id that issued it, ``sub`` = client id, ``scope`` = space-separated URNs,
``iat``, ``exp``, ``jti``. Any agent can verify a token from any peer of the cluster: it reads the
(unverified) issuer, looks up that peer's public key, and verifies with EdDSA only, so ``alg: none``
and HMAC-with-the-public-key forgeries are refused before any claim is trusted.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from arctic.auth.scopes import normalise_scopes
from arctic.cluster.identity import Identity, public_key_from_b64

ALGORITHM = "EdDSA"
DEFAULT_TTL = 3600
LEEWAY_SECONDS = 5  # clock skew tolerated between peers
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]

PublicKeyLike = str | Ed25519PublicKey


class TokenError(Exception):
    """Base for refused tokens; ``str(err)`` says why."""


class TokenExpired(TokenError):
    """The token was valid but its ``exp`` has passed: the client should fetch a new one."""


class TokenInvalid(TokenError):
    """Malformed, wrongly signed, wrong algorithm or missing claims."""


def issue_token(
    private_key: Ed25519PrivateKey | Identity,
    *,
    issuer_peer_id: str,
    client_id: str,
    scopes: Iterable[str],
    ttl: int = DEFAULT_TTL,
) -> str:
    """A signed JWT for ``client_id`` valid for ``ttl`` seconds (negative: already expired, for tests)."""
    key = private_key.private_key if isinstance(private_key, Identity) else private_key
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("tokens are signed with the peer's Ed25519 private key")
    now = int(time.time())
    claims = {
        "iss": issuer_peer_id,
        "sub": client_id,
        "scope": " ".join(normalise_scopes(list(scopes))),
        "iat": now,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": issuer_peer_id, "typ": "JWT"})


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim read WITHOUT verification, only to choose which peer's key verifies the token."""
    if not isinstance(token, str):
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) and issuer else None


def _public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    try:
        return public_key_from_b64(key)
    except ValueError as err:
        raise TokenInvalid(f"issuer key unusable: {err}") from None


def verify_token(
    token: str,
    public_key_for_issuer: PublicKeyLike | Callable[[str | None], PublicKeyLike | None],
    *,
    issuer: str | None = None,
) -> dict[str, Any]:
    """Verify ``token`` and return its claims.

    ``public_key_for_issuer`` is the issuing peer's public key (base64 or key object), or a function
    from the unverified issuer to that key. ``issuer``, when given, must equal ``iss``.
    Raises ``TokenExpired`` or ``TokenInvalid``.
    """
    if not isinstance(token, str) or not token:
        raise TokenInvalid("token must be a non-empty string")
    key = public_key_for_issuer
    if callable(key) and not isinstance(key, Ed25519PublicKey):
        key = key(unverified_issuer(token))
        if key is None:
            raise TokenInvalid("token issuer is not a known peer")
    try:
        claims = jwt.decode(
            token, _public_key(key), algorithms=[ALGORITHM], leeway=LEEWAY_SECONDS,
            issuer=issuer, options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("token expired") from None
    except jwt.PyJWTError as err:
        raise TokenInvalid(str(err) or type(err).__name__) from None
    for name in ("iss", "sub"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise TokenInvalid(f"claim {name} must be a non-empty string")
    if not isinstance(claims.get("scope", ""), str):
        raise TokenInvalid("claim scope must be a space-separated string")
    return claims


def jwk_for(public_b64: str, kid: str) -> dict[str, str]:
    """The OKP JWK (RFC 8037) of a peer's Ed25519 key, as published at ``/.well-known/jwks.json``."""
    key = public_key_from_b64(public_b64)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": ALGORITHM}
