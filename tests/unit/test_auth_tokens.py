"""Access tokens: EdDSA JWTs signed by the issuing peer; expired, foreign and forged tokens are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from arctic.auth import scopes
from arctic.auth.tokens import (
    TokenExpired,
    TokenInvalid,
    issue_token,
    jwk_for,
    unverified_issuer,
    verify_token,
)
from arctic.cluster.identity import Identity

PEER = "peer_01KB45EYP1VJ1RZEGJDPKJQ9V4"
CLIENT = "cli_01KB45EYP1VJ1RZEGJDPKJQ9V5"


@pytest.fixture(scope="module")
def peer() -> Identity:
    return Identity.generate()


def _token(peer: Identity, **kw) -> str:
    params = {"issuer_peer_id": PEER, "client_id": CLIENT, "scopes": ["services.read", scopes.PEERS_READ]}
    params.update(kw)
    return issue_token(peer.private_key, **params)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, signature: bytes | None = None, key: bytes = b"") -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    if signature is None:
        signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64url(signature)}"


def _jti(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def _claims(**kw) -> dict:
    now = int(time.time())
    return {"iss": PEER, "sub": CLIENT, "scope": scopes.ADMIN, "iat": now, "exp": now + 3600, "jti": "x"} | kw


def test_round_trip_carries_the_documented_claims(peer):
    claims = verify_token(_token(peer), peer.public_key_b64)
    assert claims["iss"] == PEER and claims["sub"] == CLIENT
    assert claims["scope"] == f"{scopes.SERVICES_READ} {scopes.PEERS_READ}"
    assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]


def test_header_is_eddsa_with_the_issuer_as_key_id(peer):
    header = jwt.get_unverified_header(_token(peer))
    assert header["alg"] == "EdDSA" and header["kid"] == PEER


def test_every_token_has_a_unique_jti(peer):
    assert _jti(_token(peer)) != _jti(_token(peer))


def test_key_may_be_given_as_a_lookup_by_issuer(peer):
    seen = []

    def lookup(issuer):
        seen.append(issuer)
        return peer.public_key_b64 if issuer == PEER else None

    assert verify_token(_token(peer), lookup)["sub"] == CLIENT and seen == [PEER]
    with pytest.raises(TokenInvalid, match="not a known peer"):
        verify_token(_token(peer, issuer_peer_id="peer_other"), lookup)


def test_expired_token_raises_token_expired(peer):
    with pytest.raises(TokenExpired):
        verify_token(_token(peer, ttl=-30), peer.public_key_b64)


def test_expiry_within_the_small_leeway_is_tolerated(peer):
    verify_token(_token(peer, ttl=-2), peer.public_key_b64)


def test_token_signed_by_another_key_is_invalid(peer):
    stranger = Identity.generate()
    with pytest.raises(TokenInvalid):
        verify_token(_token(stranger), peer.public_key_b64)


def test_expired_token_from_another_key_is_invalid_not_expired(peer):
    with pytest.raises(TokenInvalid):
        verify_token(_token(Identity.generate(), ttl=-3600), peer.public_key_b64)


def test_alg_none_token_is_rejected(peer):
    with pytest.raises(TokenInvalid):
        verify_token(_forge({"alg": "none", "typ": "JWT"}, _claims()), peer.public_key_b64)


@pytest.mark.parametrize("secret", ["b64", "raw"])
def test_hs256_token_keyed_with_the_public_key_is_rejected(peer, secret):
    key = peer.public_key_b64.encode() if secret == "b64" else base64.b64decode(peer.public_key_b64)
    forged = _forge({"alg": "HS256", "typ": "JWT"}, _claims(), key=key)
    with pytest.raises(TokenInvalid):
        verify_token(forged, peer.public_key_b64)


def test_tampered_claims_break_the_signature(peer):
    head, _, rest = _token(peer).partition(".")
    _, _, sig = rest.partition(".")
    forged = f"{head}.{_b64url(json.dumps(_claims()).encode())}.{sig}"
    with pytest.raises(TokenInvalid):
        verify_token(forged, peer.public_key_b64)


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "sub"])
def test_required_claims_must_be_present(peer, missing):
    claims = {k: v for k, v in _claims().items() if k != missing}
    token = jwt.encode(claims, peer.private_key, algorithm="EdDSA")
    with pytest.raises(TokenInvalid):
        verify_token(token, peer.public_key_b64)


def test_expected_issuer_is_enforced_when_given(peer):
    verify_token(_token(peer), peer.public_key_b64, issuer=PEER)
    with pytest.raises(TokenInvalid):
        verify_token(_token(peer), peer.public_key_b64, issuer="peer_someone_else")


@pytest.mark.parametrize("garbage", ["", "nonsense", "a.b.c", None])
def test_garbage_is_invalid_and_has_no_issuer(peer, garbage):
    with pytest.raises(TokenInvalid):
        verify_token(garbage, peer.public_key_b64)
    assert unverified_issuer(garbage) is None


def test_unverified_issuer_reads_iss_even_from_an_expired_token(peer):
    assert unverified_issuer(_token(peer, ttl=-3600)) == PEER


def test_issuing_with_an_unknown_scope_fails(peer):
    with pytest.raises(ValueError, match="invalid scope"):
        _token(peer, scopes=["root"])


def test_jwk_is_an_okp_ed25519_key_that_verifies_tokens(peer):
    jwk = jwk_for(peer.public_key_b64, PEER)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == PEER and jwk["alg"] == "EdDSA"
    assert "=" not in jwk["x"]
    key = jwt.PyJWK(jwk).key
    assert jwt.decode(_token(peer), key, algorithms=["EdDSA"])["sub"] == CLIENT
