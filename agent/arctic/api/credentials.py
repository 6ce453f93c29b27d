"""API credentials (OAuth2 clients) and the shared cluster credential.

Secrets are returned once and stored hashed. A caller can only grant scopes it holds, revocation is
immediate (tokens of a revoked client stop working on the next request) and a caller cannot revoke
the credential it is using (``CANNOT_REVOKE_CURRENT``).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, g
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.auth.secrets import hash_secret, new_client_id, new_secret
from arctic.errors import ApiError, Forbidden, InvalidRequest, NotFound
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.records import Credential
from arctic.timeutil import to_rfc3339

bp = Blueprint("credentials", __name__)
log = get_logger("api")
ROTATION_GRACE = timedelta(hours=24)


class CredentialSchema(Schema):
    client_id = fields.String(metadata={"example": "cli_01KBYMHMRKGBAWSXB58ENRAR24"})
    scopes = fields.List(fields.String())
    license_id = fields.String()
    is_cluster = fields.Boolean()
    created_at = fields.String()
    last_used_at = fields.String(allow_none=True)


class CredentialList(Schema):
    credentials = fields.List(fields.Nested(CredentialSchema))


class CredentialCreate(Schema):
    scopes = fields.List(fields.String(), metadata={"description": "URNs or short forms; omitted = the caller's"})


class CredentialCreated(CredentialSchema):
    client_secret = fields.String(metadata={"description": "shown only once"})


class ClusterCredentialSchema(Schema):
    client_id = fields.String()
    version = fields.Integer()
    rotated_by = fields.String(allow_none=True)
    rotated_at = fields.String(allow_none=True)
    client_secret = fields.String(metadata={"description": "only in the rotate response"})


@bp.get("/v1/credentials")
@endpoint("List credentials (secrets are never returned)", scope=scope_rules.CREDENTIALS_READ,
          response=CredentialList)
def list_credentials():
    return {"credentials": [c.to_api() for c in repo.list_credentials(agent().db.read())]}


@bp.post("/v1/credentials")
@endpoint("Create a credential", scope=scope_rules.CREDENTIALS_WRITE, body=CredentialCreate,
          response=CredentialCreated, status=201, write=True, errors=(400, 403))
def create_credential():
    runtime = agent()
    body = load(CredentialCreate(), json_body())
    held = list(g.principal.scopes)
    try:
        wanted = scope_rules.normalise_scopes(body["scopes"]) if body.get("scopes") else held
    except ValueError as err:
        raise InvalidRequest(str(err)) from None
    for scope in wanted:
        if not scope_rules.grants(held, scope):
            raise Forbidden(f"cannot grant {scope}: the calling credential does not hold it")
    now = to_rfc3339(runtime.clock())
    client_id, secret = new_client_id(), new_secret()
    cred = Credential(client_id, hash_secret(secret), None, None, wanted, runtime.licence.license_id, False, 1,
                      None, None, now, None, None)
    with runtime.db.write() as tx:
        repo.insert_credential(tx, cred)
    log.info("credential created", client_id=client_id, scopes=wanted, by=g.principal.client_id or "recovery")
    return cred.to_api() | {"client_secret": secret}, 201


@bp.delete("/v1/credentials/<client_id>")
@endpoint("Revoke a credential (immediate)", scope=scope_rules.CREDENTIALS_WRITE, write=True, errors=(404, 422))
def revoke_credential(client_id: str):
    runtime = agent()
    with runtime.db.write() as tx:
        cred = repo.get_credential(tx, client_id)
        if cred is None or cred.revoked_at:
            raise NotFound(f"credential not found: {client_id}")
        if client_id == g.principal.client_id:
            raise ApiError("cannot revoke the credential currently in use", code="CANNOT_REVOKE_CURRENT",
                           status=422)
        if cred.is_cluster:
            raise ApiError("the shared cluster credential cannot be revoked; rotate it with "
                           "'arctic credentials rotate'", code="CANNOT_REVOKE_CURRENT", status=422)
        repo.revoke_credential(tx, client_id, to_rfc3339(runtime.clock()))
    log.info("credential revoked", client_id=client_id, by=g.principal.client_id or "recovery")
    return {"deleted": True}


@bp.get("/v1/cluster/credentials")
@endpoint("The shared cluster credential (no secret)", scope=scope_rules.ADMIN, response=ClusterCredentialSchema)
def get_cluster_credential():
    cred = repo.cluster_credential(agent().db.read())
    return {"client_id": cred.client_id, "version": cred.version, "rotated_by": cred.rotated_by,
            "rotated_at": cred.rotated_at}


@bp.post("/v1/cluster/credentials/rotate")
@endpoint("Rotate the shared cluster secret; the old one stays valid for 24 h",
          scope=scope_rules.CREDENTIALS_WRITE, response=ClusterCredentialSchema, write=True)
def rotate_cluster_credential():
    runtime = agent()
    now = runtime.clock()
    secret = new_secret()
    with runtime.db.write() as tx:
        cred = repo.cluster_credential(tx)
        repo.rotate_credential(tx, cred.client_id, hash_secret(secret), to_rfc3339(now + ROTATION_GRACE),
                               runtime.local_peer_id, to_rfc3339(now))
        cred = repo.get_credential(tx, cred.client_id)
    log.info("cluster credential rotated", client_id=cred.client_id, version=cred.version)
    return {"client_id": cred.client_id, "client_secret": secret, "version": cred.version,
            "rotated_by": cred.rotated_by, "rotated_at": cred.rotated_at}
