"""OAuth2 client-credentials token endpoint and the public keys that verify its tokens.

Tokens are EdDSA JWTs signed by this peer's identity key (``iss`` = peer id, ``sub`` = client id),
valid one hour. Any peer that knows the issuer's public key can verify them, which is what lets
one cluster credential work on every agent.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import unquote_plus

from flask import Blueprint, request
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.auth import tokens
from arctic.auth.secrets import verify_secret
from arctic.errors import InvalidRequest, NotBootstrapped, Unauthorized
from arctic.store import repository as repo
from arctic.timeutil import parse_rfc3339, to_rfc3339

bp = Blueprint("oauth", __name__)
TOKEN_TTL = 3600
ROTATION_GRACE = timedelta(hours=24)


class TokenRequest(Schema):
    grant_type = fields.String(required=True, metadata={"example": "client_credentials"})
    client_id = fields.String(required=True)
    client_secret = fields.String(required=True)


class TokenResponse(Schema):
    access_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"example": TOKEN_TTL})
    scope = fields.String()


@bp.post("/v1/oauth/token")
@endpoint("Exchange client credentials for a one-hour access token", scope=None, body=TokenRequest,
          response=TokenResponse, form=True, errors=(400, 401))
def token():
    runtime = agent()
    if not runtime.bootstrapped or runtime.identity is None:
        raise NotBootstrapped("agent is not bootstrapped yet: run 'arctic bootstrap' first")
    data = request.form.to_dict() if request.form else (request.get_json(silent=True) or {})
    if not isinstance(data, dict):
        raise InvalidRequest("send grant_type, client_id and client_secret as a form or JSON object")
    grant = data.get("grant_type")
    if grant != "client_credentials":
        raise InvalidRequest("grant_type must be client_credentials")
    client_id, secret = data.get("client_id"), data.get("client_secret")
    basic = request.authorization  # RFC 6749 2.3.1: a client may authenticate with HTTP Basic instead
    if basic is not None and basic.type == "basic" and not client_id and not secret:
        client_id, secret = unquote_plus(basic.username or ""), unquote_plus(basic.password or "")
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id or not secret:
        raise InvalidRequest("client_id and client_secret are required")
    cred = repo.get_credential(runtime.db.read(), client_id)
    now = runtime.clock()
    valid = cred is not None and not cred.revoked_at and (
        verify_secret(secret, cred.secret_hash)
        or (cred.previous_secret_hash is not None and cred.previous_valid_until is not None
            and now < parse_rfc3339(cred.previous_valid_until) and verify_secret(secret, cred.previous_secret_hash))
    )
    if not valid:
        raise Unauthorized("invalid client credentials")
    repo.touch_credential_use(runtime.db.read(), client_id, to_rfc3339(now))
    access = tokens.issue_token(runtime.identity.private_key, issuer_peer_id=runtime.local_peer_id,
                                client_id=client_id, scopes=cred.scopes, ttl=TOKEN_TTL)
    return {"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL, "scope": " ".join(cred.scopes)}


@bp.get("/.well-known/jwks.json")
@endpoint("Public keys (Ed25519 JWKs) of every peer, to verify access tokens", scope=None, always=True)
def jwks():
    runtime = agent()
    keys = [tokens.jwk_for(p.public_key, p.id) for p in repo.list_peers(runtime.db.read()) if p.state != "revoked"]
    return {"keys": keys}


@bp.get("/.well-known/openid-configuration")
@endpoint("OpenID discovery document (token endpoint and JWKS)", scope=None, always=True)
def openid_configuration():
    base = request.host_url.rstrip("/")
    return {
        "issuer": agent().local_peer_id or "",
        "token_endpoint": f"{base}/v1/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }
