"""``GET``/``PUT /v1/license``: what the cluster is entitled to, and renewal."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.cluster.licence import LicenceError, same_customer, verify_licence
from arctic.errors import ApiError
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339

bp = Blueprint("license", __name__)
log = get_logger("cluster")


class LicenceSchema(Schema):
    license_id = fields.String()
    customer_id = fields.String()
    issued_at = fields.String()
    expires_at = fields.String()
    max_nodes = fields.Integer()
    max_services = fields.Integer()
    features = fields.List(fields.String())
    state = fields.String(metadata={"description": "valid | warning | grace | read_only | suspended"})
    days_remaining = fields.Integer()
    message = fields.String()
    nodes_used = fields.Integer()
    services_used = fields.Integer()


class LicenceUpdate(Schema):
    license = fields.Dict(required=True)


def licence_view() -> dict:
    runtime = agent()
    lic, state = runtime.licence, runtime.licence_state()
    conn = runtime.db.read()
    return {
        "license_id": lic.license_id, "customer_id": lic.customer_id, "issued_at": to_rfc3339(lic.issued_at),
        "expires_at": to_rfc3339(lic.expires_at), "max_nodes": lic.max_nodes, "max_services": lic.max_services,
        "features": list(lic.features), "state": state.name, "days_remaining": state.days_remaining,
        "message": state.message, "nodes_used": len([p for p in repo.list_peers(conn) if p.state != "revoked"]),
        "services_used": repo.count_services(conn),
    }


@bp.get("/v1/license")
@endpoint("Current licence, its state and usage", scope="any", response=LicenceSchema, always=True)
def get_licence():
    return licence_view()


@bp.put("/v1/license")
@endpoint("Install a renewed licence (same customer)", scope=scope_rules.ADMIN, body=LicenceUpdate,
          response=LicenceSchema, always=True, errors=(400, 422))
def put_licence():
    runtime = agent()
    data = json_body()
    doc = data["license"] if isinstance(data.get("license"), dict) else data
    load(LicenceUpdate(), {"license": doc})
    try:
        new = verify_licence(doc, list(runtime.config.issuer_public_keys))
    except LicenceError as err:
        raise ApiError(err.message, code=err.code, status=422) from None
    current = runtime.licence
    if current is not None and not same_customer(current, new):
        raise ApiError(f"licence belongs to customer {new.customer_id}, this cluster is {current.customer_id}",
                       code="LICENSE_MISMATCH", status=422)
    with runtime.db.write() as tx:
        repo.set_meta(tx, "license", new.raw)
    runtime.set_licence(new)
    log.info("licence updated", license_id=new.license_id, expires_at=to_rfc3339(new.expires_at))
    return licence_view()
