"""Services: a one-way link from a source peer (ingress) to a target peer (exit).

Rules (seed + reference notes): the target must be a known peer other than the source; transport is
``tcp`` or ``kcp``; Transparent Mode needs ``requires_interface`` and ``tcp``; desired interface
addresses only make sense with an interface; the licence caps the number of services cluster-wide.
A refused request changes nothing.
"""

from __future__ import annotations

import re

from flask import Blueprint, request
from marshmallow import Schema, ValidationError, fields, validate, validates

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import InterfaceCidr, StrictBoolean, StrictInteger, StrictString
from arctic.api.forwarding import owner_answers, service_owner
from arctic.api.lookup import find_peer, find_service, parse_bool_arg
from arctic.api.observations import INTERFACE_STATES, with_peer_observations
from arctic.api.routes import RouteSchema
from arctic.api.rules import StoreCatalog, check_desired_addresses_free, check_name_free, check_service_limit
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.cluster import limits
from arctic.errors import InvalidRequest
from arctic.ids import new_id, parse_id
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339

bp = Blueprint("services", __name__)
log = get_logger("api")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAX_BANDWIDTH_MBPS = 1_000_000
TRANSPORT_MESSAGE = "Transport must be tcp or kcp"


class _ServiceFields(Schema):
    name = StrictString(allow_none=True, metadata={"description": "optional unique name", "example": "a-to-b"})
    transport_type = StrictString(
        validate=validate.OneOf(["tcp", "kcp"], error=TRANSPORT_MESSAGE),
        metadata={"code": "INVALID_TRANSPORT", "example": "tcp"},
    )
    requires_interface = StrictBoolean()
    desired_ipv4_cidr = InterfaceCidr(4, allow_none=True)
    desired_ipv6_cidr = InterfaceCidr(6, allow_none=True)
    fully_transparent = StrictBoolean()
    bandwidth_limit_mbps = StrictInteger(minimum=0, maximum=MAX_BANDWIDTH_MBPS,
                                         metadata={"description": "Mbps, 0 = unlimited"})

    @validates("name")
    def _name(self, value, **_):
        if value is not None and not NAME_RE.match(value):
            raise ValidationError("name must be 1-63 characters of letters, digits, '.', '_' or '-', "
                                  "starting with a letter or digit")


class ServiceCreate(_ServiceFields):
    target_peer_id = StrictString(required=True, metadata={"example": "peer_01HXYZDEF789..."})
    source_peer_id = StrictString(metadata={"description": "defaults to the local peer"})


class ServiceUpdate(_ServiceFields):
    source_peer_id = StrictString(metadata={"description": "immutable: must equal the current value"})
    target_peer_id = StrictString(metadata={"description": "immutable: must equal the current value"})


class TrafficSchema(Schema):
    observed_by = fields.String(metadata={"description": "the peer whose data plane counted (the source peer)"})
    counting_since = fields.String(metadata={"description": "when that data plane started counting"})
    connections_total = fields.Integer()
    connections_open = fields.Integer()
    bytes_sent = fields.Integer(metadata={"description": "bytes from clients to the target (through the tunnel)"})
    bytes_received = fields.Integer(metadata={"description": "bytes back from the target to clients"})
    throughput_sent_bps = fields.Integer(metadata={"description": "bits/s sent over the last 5 seconds"})
    throughput_received_bps = fields.Integer(metadata={"description": "bits/s received over the last 5 seconds"})
    refused = fields.Dict(keys=fields.String(), values=fields.Integer(),
                          metadata={"description": "connections refused, by reason"})
    refused_total = fields.Integer()
    last_connection_at = fields.String(allow_none=True)


class ServiceSchema(Schema):
    id = fields.String(metadata={"example": "svc_01KBYMNEVYN9NC4M3RB3ZGN4RZ"})
    name = fields.String(allow_none=True)
    source_peer_id = fields.String()
    target_peer_id = fields.String()
    transport_type = fields.String()
    requires_interface = fields.Boolean()
    desired_ipv4_cidr = fields.String(allow_none=True)
    desired_ipv6_cidr = fields.String(allow_none=True)
    interface_name = fields.String(allow_none=True)
    interface_mac = fields.String(allow_none=True)
    interface_ipv4_cidr = fields.String(allow_none=True)
    interface_ipv6_cidr = fields.String(allow_none=True)
    interface_state = fields.String(allow_none=True, metadata={
        "enum": [*INTERFACE_STATES, None], "description": "where creating the interface stands, as the target peer "
        "reports it (null without an interface); arctic.api.observations"})
    interface_detail = fields.String(allow_none=True, metadata={
        "description": "what the interface waits for (e.g. a DHCP lease) or why it failed"})
    fully_transparent = fields.Boolean()
    bandwidth_limit_mbps = fields.Integer()
    route_count = fields.Integer()
    routes = fields.List(fields.Nested(RouteSchema))
    traffic = fields.Nested(TrafficSchema, allow_none=True,
                            metadata={"description": "live counters of the source peer's data plane; null when it "
                                                     "cannot be asked or runs no data plane"})
    created_at = fields.String()
    updated_at = fields.String()


class ServiceQuery(Schema):
    source_peer_id = fields.String()
    target_peer_id = fields.String()
    requires_interface = fields.Boolean()
    name = fields.String()


DEFAULTS = {"transport_type": "tcp", "requires_interface": False, "desired_ipv4_cidr": None,
            "desired_ipv6_cidr": None, "fully_transparent": False, "bandwidth_limit_mbps": 0, "name": None}


def check_service_rules(svc: dict) -> None:
    """Cross-field rules, applied to the complete (merged) service."""
    if svc["source_peer_id"] == svc["target_peer_id"]:
        raise InvalidRequest("target_peer_id must differ from source_peer_id: a service links two different peers")
    if svc["fully_transparent"] and not svc["requires_interface"]:
        raise InvalidRequest("fully_transparent requires requires_interface: true "
                             "(Transparent Mode needs the service's own interface)")
    for key in ("desired_ipv4_cidr", "desired_ipv6_cidr"):
        if svc.get(key) and not svc["requires_interface"]:
            raise InvalidRequest(f"{key} needs requires_interface: true (it is the service interface's address)")


def checked_update(current, body: dict) -> dict:
    """``body`` of a service update without the peer ids, once the update is known to be allowed.

    The peers of a service never change (a new service is needed), and the merged result must pass the same
    rules as a new service. Shared with the dry run (``api/plan.py``) so both answer alike.
    """
    body = dict(body)
    for key in ("source_peer_id", "target_peer_id"):
        if key in body and parse_id("peer", body.pop(key)) != getattr(current, key):
            raise InvalidRequest(f"{key} cannot be changed; create a new service instead")
    check_service_rules({k: getattr(current, k) for k in (*DEFAULTS, "source_peer_id", "target_peer_id")} | body)
    return body


@bp.get("/v1/services")
@endpoint("List services", scope=scope_rules.SERVICES_READ, query=ServiceQuery, response=ServiceSchema, many=True)
def list_services():
    args = request.args
    filters = {}
    for key, kind in (("source_peer_id", "peer"), ("target_peer_id", "peer")):
        if args.get(key):
            filters[key] = parse_id(kind, args[key]) or args[key]
    services = repo.list_services(agent().db.read(), requires_interface=parse_bool_arg("requires_interface"),
                                  **filters)
    if args.get("name"):
        services = [s for s in services if s.name == args["name"]]
    return with_peer_observations([s.to_api(with_routes=False) for s in services])


@bp.get("/v1/services/<service_id>")
@endpoint("Get a service with its routes in precedence order", scope=scope_rules.SERVICES_READ,
          response=ServiceSchema, errors=(404,))
def get_service(service_id: str):
    return with_peer_observations([find_service(service_id).to_api(with_routes=True)])[0]


def _source_of(body: dict) -> str:
    """A create's source peer as given: the body's, or this agent's (the one the caller asked)."""
    return body.get("source_peer_id") or agent().local_peer_id


@bp.post("/v1/services")
@endpoint("Create a service", scope=scope_rules.SERVICES_WRITE, body=ServiceCreate, response=ServiceSchema,
          status=201, write=True, errors=(400, 404, 409, 422))
@owner_answers(lambda body: find_peer(_source_of(body), field="source peer").id,
               parse=lambda: load(ServiceCreate(), json_body()))
def create_service(body: dict):
    runtime = agent()
    svc = {**DEFAULTS, **body}
    svc["source_peer_id"] = _source_of(body)

    def check_new_service(conn) -> None:
        catalog = StoreCatalog(conn)
        svc["source_peer_id"] = find_peer(svc["source_peer_id"], conn, "source peer").id
        svc["target_peer_id"] = find_peer(svc["target_peer_id"], conn, "target peer").id
        check_service_rules(svc)
        check_name_free(catalog, svc["name"])
        check_desired_addresses_free(catalog, svc)
        check_service_limit(catalog)

    # Validate, then take a slot cluster-wide (the licence limit holds across agents, see
    # cluster/limits.py), then re-check and insert: no network call runs inside the write transaction.
    check_new_service(runtime.db.read())
    service_id = new_id("svc")
    limits.reserve(runtime, limits.SERVICE, service_id)
    with runtime.db.write() as tx:
        check_new_service(tx)
        repo.insert_service(tx, service_id, svc, to_rfc3339(runtime.clock()))
        created = repo.get_service(tx, service_id)
    log.info("service created", service_id=service_id, source=svc["source_peer_id"], target=svc["target_peer_id"])
    return with_peer_observations([created.to_api(with_routes=True)], ask_peers=False)[0], 201


@bp.put("/v1/services/<service_id>")
@endpoint("Update a service (partial)", scope=scope_rules.SERVICES_WRITE, body=ServiceUpdate,
          response=ServiceSchema, write=True, errors=(400, 404, 409, 422))
@owner_answers(service_owner, parse=lambda: load(ServiceUpdate(), json_body(), partial=True))
def update_service(service_id: str, body: dict):
    runtime = agent()
    with runtime.db.write() as tx:
        current = find_service(service_id, tx)
        body = checked_update(current, body)
        catalog = StoreCatalog(tx)
        check_name_free(catalog, body.get("name"), current=current)
        check_desired_addresses_free(catalog, vars(current) | body, current=current)
        repo.update_service(tx, current.id, body, to_rfc3339(runtime.clock()))
        updated = repo.get_service(tx, current.id)
    log.info("service updated", service_id=current.id, fields=sorted(body))
    return with_peer_observations([updated.to_api(with_routes=True)], ask_peers=False)[0]


@bp.delete("/v1/services/<service_id>")
@endpoint("Delete a service and all its routes", scope=scope_rules.SERVICES_WRITE, write=True, errors=(404,))
@owner_answers(service_owner, local_if_owner_left=True)
def delete_service(service_id: str):
    runtime = agent()
    with runtime.db.write() as tx:
        current = find_service(service_id, tx)
        repo.delete_service(tx, current.id)
    log.info("service deleted", service_id=current.id)
    return {"deleted": True, "id": current.id}
