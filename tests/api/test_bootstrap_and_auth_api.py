"""Bootstrap once, tokens, recovery header, credentials and their scopes."""

from __future__ import annotations

import os
import stat

import jwt
import pytest
from agentkit import Issuer


def test_bootstrap_creates_identity_peer_cluster_and_shared_credential(fresh_api):
    creds = fresh_api.bootstrap()
    assert creds["peer_id"].startswith("peer_") and creds["cluster_id"].startswith("clu_")
    assert creds["client_id"].startswith("cli_") and creds["client_secret"].startswith("sec_")
    assert creds["license_id"].startswith("lic_") and creds["max_services"] == 100
    key = fresh_api.data_dir / "peer.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ident = fresh_api.client.get("/v1/cluster/identity").get_json()
    assert ident["peer_id"] == creds["peer_id"] and ident["public_key"] == creds["peer_public_key"]
    assert ident["cluster_id"] == creds["cluster_id"]
    (peer,) = fresh_api.get("/v1/peers").get_json()
    assert peer["is_local"] is True and peer["name"] == "agent-a"


def test_secret_is_stored_hashed(fresh_api):
    creds = fresh_api.bootstrap()
    raw = (fresh_api.data_dir / "arctic.db").read_bytes()
    assert creds["client_secret"].encode() not in raw


def test_second_bootstrap_is_refused_and_changes_nothing(api):
    before = api.client.get("/v1/cluster/identity").get_json()
    resp = api.client.post("/v1/bootstrap", json={"license": api.issuer.licence()})
    assert resp.status_code == 409 and resp.get_json()["code"] == "ALREADY_BOOTSTRAPPED"
    assert api.client.get("/v1/cluster/identity").get_json() == before


@pytest.mark.parametrize("mutate, code", [
    (lambda lic: lic | {"max_services": 100000}, "LICENSE_INVALID"),
    (lambda lic: {k: v for k, v in lic.items() if k != "signature"}, "LICENSE_INVALID"),
    (lambda lic: Issuer.generate().licence(), "LICENSE_INVALID"),
])
def test_bootstrap_refuses_untrusted_licences(fresh_api, mutate, code):
    resp = fresh_api.client.post("/v1/bootstrap", json={"license": mutate(fresh_api.issuer.licence())})
    assert resp.status_code == 422 and resp.get_json()["code"] == code
    assert not fresh_api.runtime.bootstrapped
    assert not (fresh_api.data_dir / "peer.key").exists()


def test_bootstrap_refuses_an_expired_licence(fresh_api):
    lic = fresh_api.issuer.licence(issued_at="2020-01-01T00:00:00Z", expires_at="2021-01-01T00:00:00Z")
    resp = fresh_api.client.post("/v1/bootstrap", json={"license": lic})
    assert resp.status_code == 422 and resp.get_json()["code"] == "LICENSE_EXPIRED"


@pytest.mark.parametrize("body", [{}, {"license": "x"}, {"license": {}, "name": 5}])
def test_bootstrap_refuses_malformed_bodies(fresh_api, body):
    resp = fresh_api.client.post("/v1/bootstrap", json=body)
    assert resp.status_code in (400, 422)
    assert resp.get_json()["code"] in ("MISSING_FIELD", "INVALID_REQUEST", "LICENSE_INVALID")
    assert not fresh_api.runtime.bootstrapped


def test_token_is_an_eddsa_jwt_for_one_hour_with_peer_issuer(api):
    resp = api.client.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                                    "client_id": api.creds["client_id"],
                                                    "client_secret": api.creds["client_secret"]})
    body = resp.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert claims["iss"] == api.local_peer_id and claims["sub"] == api.creds["client_id"]
    assert claims["exp"] - claims["iat"] == 3600


def test_token_endpoint_accepts_json_too(api):
    resp = api.client.post("/v1/oauth/token", json={"grant_type": "client_credentials",
                                                    "client_id": api.creds["client_id"],
                                                    "client_secret": api.creds["client_secret"]})
    assert resp.status_code == 200


def test_token_endpoint_accepts_http_basic_client_authentication(api):
    """RFC 6749 2.3.1, as Prometheus's ``oauth2`` scrape setting and most OAuth2 libraries send it."""
    from base64 import b64encode
    from urllib.parse import quote_plus

    pair = f"{quote_plus(api.creds['client_id'])}:{quote_plus(api.creds['client_secret'])}"
    basic = {"Authorization": "Basic " + b64encode(pair.encode()).decode()}
    resp = api.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"}, headers=basic)
    assert resp.status_code == 200 and resp.get_json()["token_type"] == "Bearer"
    wrong = b64encode(f"{api.creds['client_id']}:sec_no".encode()).decode()
    resp = api.client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": f"Basic {wrong}"})
    assert resp.status_code == 401


@pytest.mark.parametrize("data, status", [
    ({"grant_type": "password", "client_id": "x", "client_secret": "y"}, 400),
    ({"grant_type": "client_credentials"}, 400),
    ({"grant_type": "client_credentials", "client_id": "cli_nope", "client_secret": "sec_x"}, 401),
])
def test_bad_token_requests_are_refused(api, data, status):
    assert api.client.post("/v1/oauth/token", data=data).status_code == status


def test_wrong_secret_is_unauthorized(api):
    resp = api.client.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                                    "client_id": api.creds["client_id"], "client_secret": "sec_no"})
    assert resp.status_code == 401 and resp.get_json()["code"] == "UNAUTHORIZED"


def test_expired_token_is_token_expired(api):
    api.clock.advance(hours=2)  # the agent's clock moves; the token's exp is checked against real time
    token = api.token_for(api.creds["client_id"], api.creds["client_secret"])
    api.clock.advance(hours=-2)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] > 0
    from arctic.auth import tokens
    expired = tokens.issue_token(api.runtime.identity.private_key, issuer_peer_id=api.local_peer_id,
                                 client_id=api.creds["client_id"], scopes=["urn:tillered:arctic:admin"], ttl=-10)
    resp = api.get("/v1/services", token=expired)
    assert resp.status_code == 401 and resp.get_json()["code"] == "TOKEN_EXPIRED"


def test_token_from_an_unknown_issuer_is_unauthorized(api):
    from arctic.auth import tokens
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    forged = tokens.issue_token(Ed25519PrivateKey.generate(), issuer_peer_id=api.local_peer_id,
                                client_id=api.creds["client_id"], scopes=["urn:tillered:arctic:admin"])
    resp = api.get("/v1/services", token=forged)
    assert resp.status_code == 401 and resp.get_json()["code"] == "UNAUTHORIZED"


def test_missing_or_garbage_bearer_is_unauthorized(api):
    assert api.client.get("/v1/services").status_code == 401
    assert api.client.get("/v1/services", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert api.client.get("/v1/services", headers={"Authorization": "Basic abc"}).status_code == 401


def test_recovery_header_grants_admin_for_that_request_and_is_logged(api, caplog):
    resp = api.client.get("/v1/credentials", headers={"X-Arctic-Recovery": "test-recovery-token-value"})
    assert resp.status_code == 200
    assert any("recovery token used" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert api.client.get("/v1/credentials", headers={"X-Arctic-Recovery": "wrong"}).status_code == 401
    assert api.client.get("/v1/credentials").status_code == 401


def test_credentials_create_list_revoke_cycle(api):
    resp = api.post("/v1/credentials", json={"scopes": ["peers.read", "urn:tillered:arctic:services.read"]})
    assert resp.status_code == 201
    created = resp.get_json()
    assert created["scopes"] == ["urn:tillered:arctic:peers.read", "urn:tillered:arctic:services.read"]
    listed = api.get("/v1/credentials").get_json()["credentials"]
    assert created["client_id"] in {c["client_id"] for c in listed}
    assert all("client_secret" not in c and "secret_hash" not in c for c in listed)
    token = api.token_for(created["client_id"], created["client_secret"])
    assert api.get("/v1/services", token=token).status_code == 200
    assert api.post("/v1/services", token=token, json={}).status_code == 403
    assert api.delete(f"/v1/credentials/{created['client_id']}").get_json() == {"deleted": True}
    resp = api.get("/v1/services", token=token)  # revocation is immediate, even for live tokens
    assert resp.status_code == 401
    assert api.delete(f"/v1/credentials/{created['client_id']}").status_code == 404


def test_credential_without_scopes_inherits_the_callers(api):
    limited = api.post("/v1/credentials", json={"scopes": ["credentials.write", "services.read"]}).get_json()
    token = api.token_for(limited["client_id"], limited["client_secret"])
    child = api.post("/v1/credentials", token=token, json={}).get_json()
    assert sorted(child["scopes"]) == sorted(limited["scopes"])


def test_a_caller_cannot_grant_scopes_it_does_not_hold(api):
    limited = api.post("/v1/credentials", json={"scopes": ["credentials.write"]}).get_json()
    token = api.token_for(limited["client_id"], limited["client_secret"])
    resp = api.post("/v1/credentials", token=token, json={"scopes": ["admin"]})
    assert resp.status_code == 403 and resp.get_json()["code"] == "FORBIDDEN"


def test_invalid_scope_is_invalid_request(api):
    resp = api.post("/v1/credentials", json={"scopes": ["peers.rule"]})
    assert resp.status_code == 400 and resp.get_json()["code"] == "INVALID_REQUEST"
    assert "peers.rule" in resp.get_json()["error"]


def test_cannot_revoke_the_credential_in_use(api):
    limited = api.post("/v1/credentials", json={"scopes": ["credentials.write"]}).get_json()
    token = api.token_for(limited["client_id"], limited["client_secret"])
    resp = api.delete(f"/v1/credentials/{limited['client_id']}", token=token)
    assert resp.status_code == 422 and resp.get_json()["code"] == "CANNOT_REVOKE_CURRENT"
    resp = api.delete(f"/v1/credentials/{api.creds['client_id']}")
    assert resp.status_code == 422 and resp.get_json()["code"] == "CANNOT_REVOKE_CURRENT"


def test_cluster_credential_rotation_keeps_old_secret_for_24_hours(api):
    rotated = api.post("/v1/cluster/credentials/rotate").get_json()
    assert rotated["version"] == 2 and rotated["client_secret"] != api.creds["client_secret"]
    api.token_for(api.creds["client_id"], rotated["client_secret"])
    api.token_for(api.creds["client_id"], api.creds["client_secret"])  # old one still valid
    api.clock.advance(hours=25)
    resp = api.client.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                                    "client_id": api.creds["client_id"],
                                                    "client_secret": api.creds["client_secret"]})
    assert resp.status_code == 401
    info = api.get("/v1/cluster/credentials", token=api.token_for(api.creds["client_id"],
                                                                     rotated["client_secret"])).get_json()
    assert info["version"] == 2 and "client_secret" not in info


def test_protected_endpoints_before_bootstrap_say_so(fresh_api):
    resp = fresh_api.client.get("/v1/services")
    assert resp.status_code == 409 and "bootstrap" in resp.get_json()["error"]
