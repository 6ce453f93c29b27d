"""``POST /v1/bootstrap``: turn a fresh agent into the first (or a new) peer of a cluster.

Done once: verifies the licence, creates the Ed25519 identity (0600), the local peer record, the
cluster id and the shared cluster credential, whose secret is returned only here.
"""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import StrictString
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.auth.secrets import hash_secret, new_client_id, new_secret
from arctic.cluster.identity import create_identity, load_identity
from arctic.cluster.licence import LicenceError, check_not_expired_for_bootstrap, verify_licence
from arctic.errors import AlreadyBootstrapped, ApiError
from arctic.ids import new_id
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.records import Credential, Peer
from arctic.timeutil import to_rfc3339

bp = Blueprint("bootstrap", __name__)
log = get_logger("cluster")


class BootstrapRequest(Schema):
    license = fields.Dict(required=True, metadata={"description": "the signed licence document (license.json)"})
    name = StrictString(load_default="")
    description = StrictString(load_default="")


class BootstrapResponse(Schema):
    peer_id = fields.String()
    peer_public_key = fields.String()
    client_id = fields.String()
    client_secret = fields.String()
    license_id = fields.String()
    customer_id = fields.String()
    cluster_id = fields.String()
    expires_at = fields.String()
    max_nodes = fields.Integer()
    max_services = fields.Integer()


@bp.post("/v1/bootstrap")
@endpoint("Bootstrap this agent with a signed licence (once)", scope=None, body=BootstrapRequest,
          response=BootstrapResponse, status=201, always=True, errors=(400, 409, 422))
def bootstrap():
    runtime = agent()
    body = load(BootstrapRequest(), json_body())
    try:
        lic = verify_licence(body["license"], list(runtime.config.issuer_public_keys))
        check_not_expired_for_bootstrap(lic, runtime.clock())
    except LicenceError as err:
        raise ApiError(err.message, code=err.code, status=422) from None
    now = to_rfc3339(runtime.clock())
    with runtime.db.write() as tx:
        if repo.get_meta(tx, "local_peer_id") is not None:
            raise AlreadyBootstrapped("agent is already bootstrapped (re-bootstrapping means resetting its data dir)")
        path = runtime.config.identity_path
        # A key left by an interrupted bootstrap is reused rather than overwritten.
        identity = load_identity(path) if path.exists() else create_identity(path)
        runtime.identity = identity  # replication signs the new records before this commits
        peer_id, cluster_id = new_id("peer"), new_id("clu")
        client_id, secret = new_client_id(), new_secret()
        repo.insert_peer(tx, Peer(peer_id, body["name"], identity.public_key_b64, runtime.config.advertised,
                                  True, "active", now, now))
        repo.insert_credential(tx, Credential(
            client_id, hash_secret(secret), None, None, [scope_rules.ADMIN], lic.license_id, True, 1,
            None, None, now, None, None))
        repo.set_meta(tx, "license", lic.raw)
        repo.set_meta(tx, "cluster", {"cluster_id": cluster_id, "created_by": peer_id, "oldest_peer_id": peer_id,
                                      "customer_id": lic.customer_id, "created_at": now})
        repo.set_meta(tx, "peer_description", body["description"])
        repo.set_meta(tx, "local_peer_id", peer_id)
    runtime.identity = identity
    runtime.set_licence(lic)
    log.info("bootstrapped", peer_id=peer_id, cluster_id=cluster_id, license_id=lic.license_id)
    return {
        "peer_id": peer_id, "peer_public_key": identity.public_key_b64, "client_id": client_id,
        "client_secret": secret, "license_id": lic.license_id, "customer_id": lic.customer_id,
        "cluster_id": cluster_id, "expires_at": to_rfc3339(lic.expires_at), "max_nodes": lic.max_nodes,
        "max_services": lic.max_services,
    }, 201
