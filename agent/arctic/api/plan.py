"""Dry runs: what this peer's kernel looks like now (``GET /v1/plan``) and would look like after some changes
(``POST /v1/plan``), as rendered text and a unified diff. Nothing is ever written.

``POST /v1/plan`` takes ``{"changes": [{"op", "service_id"?, "route_id"?, "body"?}, ...]}`` with the operations
``service.create|update|delete`` and ``route.add|update|delete``, applies them in order to an in-memory copy of the
services, and validates each body with the very schemas and rules of the real endpoints (imported from
``arctic.api.services`` / ``arctic.api.routes``), so a plan is valid exactly when the writes would be accepted.
A ``route.add`` without ``service_id`` belongs to the service created last in the same plan (how Ansible's check
mode describes "create a service with these routes"). The answer is
``{"valid", "errors": [{"index", "op", "code", "error"}], "kernel_diff": {"<local peer id>": "<unified diff>"}}``;
the diff covers nftables, policy routing, service interfaces, shaping and the data-plane config of THIS peer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import StrictInteger, StrictString
from arctic.api.lookup import find_peer
from arctic.api.routes import RouteInput, RouteUpdate, check_route_rules, load_route_batch, merged_route, route_seq
from arctic.api.services import DEFAULTS, ServiceCreate, ServiceUpdate, check_service_rules, checked_update
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.cluster import limits
from arctic.daemon import rendering
from arctic.daemon.reconcile import Preview, compare, offline_reconciler, preview
from arctic.errors import AlreadyExists, ApiError, InvalidRequest, MissingField, NotFound
from arctic.ids import new_id, parse_id
from arctic.netconf.errors import DesiredStateError
from arctic.store import repository as repo
from arctic.store.records import Peer, Route, Service
from arctic.timeutil import to_rfc3339

bp = Blueprint("plan", __name__)

OPS = ("service.create", "service.update", "service.delete", "route.add", "route.update", "route.delete")


class PlanChange(Schema):
    op = StrictString(required=True, validate=validate.OneOf(OPS, error=f"op must be one of {', '.join(OPS)}"))
    service_id = StrictString(metadata={"description": "service to change; omit on route.add after service.create"})
    route_id = StrictInteger(minimum=1, metadata={"description": "route.update / route.delete"})
    body = fields.Dict(metadata={"description": "what the real endpoint would get as its JSON body"})


class PlanRequest(Schema):
    changes = fields.List(fields.Nested(PlanChange), required=True)


class PlanErrorSchema(Schema):
    index = fields.Integer()
    op = fields.String()
    code = fields.String()
    error = fields.String()


class PlanResultSchema(Schema):
    valid = fields.Boolean()
    errors = fields.List(fields.Nested(PlanErrorSchema))
    kernel_diff = fields.Dict(keys=fields.String(), values=fields.String(),
                              metadata={"description": "peer id -> unified diff (applied -> planned)"})


class PlanViewSchema(Schema):
    peer_id = fields.String()
    kernel_managed = fields.Boolean()
    in_sync = fields.Boolean()
    nftables = fields.String()
    policy = fields.String()
    interfaces = fields.String()
    qos = fields.String()
    dataplane = fields.Dict()
    diff = fields.String()
    changes = fields.Dict(keys=fields.String(), values=fields.Boolean())
    drift = fields.List(fields.String())
    interface_errors = fields.Dict(keys=fields.String(), values=fields.String())
    last_reconcile = fields.Dict(allow_none=True)


# --- the in-memory copy the changes are applied to ----------------------------------------------------------

@dataclass
class Draft:
    local_peer_id: str
    peers: list[Peer]
    services: dict[str, Service]
    max_services: int
    now: str
    created: list[str] = field(default_factory=list)  # ids made by service.create, in order
    aliases: dict[str, str] = field(default_factory=dict)  # service_id given on service.create -> made-up id

    def service(self, ref: str | None, op: str) -> Service:
        if ref is None:
            if op == "route.add" and self.created:
                return self.services[self.created[-1]]
            raise MissingField(f"{op} needs service_id")
        sid = self.aliases.get(ref) or parse_id("svc", ref)
        found = self.services.get(sid) if sid else None
        if found is None:
            raise NotFound(f"service not found: {ref} (list services with 'arctic services list')")
        return found


def _body(change: dict) -> dict:
    body = change.get("body")
    return {} if body is None else body


def _check_name(draft: Draft, name: str | None, own_id: str | None = None) -> None:
    if name and any(s.name == name and s.id != own_id for s in draft.services.values()):
        raise AlreadyExists(f"a service named {name!r} already exists")


def _service_create(draft: Draft, change: dict) -> None:
    data = load(ServiceCreate(), _body(change))
    svc = {**DEFAULTS, **data}
    svc["source_peer_id"] = find_peer(data.get("source_peer_id") or draft.local_peer_id, field="source peer").id
    svc["target_peer_id"] = find_peer(svc["target_peer_id"], field="target peer").id
    check_service_rules(svc)
    _check_name(draft, svc["name"])
    if len(draft.services) >= draft.max_services:
        raise limits.SERVICE.refusal(len(draft.services), draft.max_services)
    sid = new_id("svc")
    draft.services[sid] = Service(
        id=sid, name=svc["name"], source_peer_id=svc["source_peer_id"], target_peer_id=svc["target_peer_id"],
        transport_type=svc["transport_type"], requires_interface=svc["requires_interface"],
        desired_ipv4_cidr=svc["desired_ipv4_cidr"], desired_ipv6_cidr=svc["desired_ipv6_cidr"],
        fully_transparent=svc["fully_transparent"], bandwidth_limit_mbps=svc["bandwidth_limit_mbps"],
        interface_name=None, interface_mac=None, interface_ipv4_cidr=None, interface_ipv6_cidr=None,
        next_route_id=1, created_at=draft.now, updated_at=draft.now, routes=[])
    draft.created.append(sid)
    if change.get("service_id"):
        draft.aliases[change["service_id"]] = sid


def _service_update(draft: Draft, change: dict) -> None:
    current = draft.service(change.get("service_id"), change["op"])
    data = checked_update(current, load(ServiceUpdate(), _body(change), partial=True))
    if data.get("name") != current.name:
        _check_name(draft, data.get("name"), current.id)
    for key, value in data.items():
        setattr(current, key, value)
    current.updated_at = draft.now


def _service_delete(draft: Draft, change: dict) -> None:
    del draft.services[draft.service(change.get("service_id"), change["op"]).id]


def _single_route(body: dict) -> dict:
    """One route given on its own (``{"dest_cidr": ..., "priority": ...}``), checked like a batch entry."""
    route = load(RouteInput(), body)
    check_route_rules(route)
    return route


def _route_add(draft: Draft, change: dict) -> None:
    body = _body(change)
    routes = load_route_batch(body) if "routes" in body else [_single_route(body)]
    service = draft.service(change.get("service_id"), change["op"])
    taken = {(r.source_cidr, r.dest_cidr): r.id for r in service.routes}
    for index, route in enumerate(routes):
        key = (route.get("source_cidr"), route.get("dest_cidr"))
        if key in taken:
            raise AlreadyExists(f"route {taken[key]} of {service.id} already matches source {key[0] or 'any'} / "
                                f"destination {key[1] or 'any'}; update it instead")
        taken[key] = service.next_route_id
        service.routes.append(Route(service.id, service.next_route_id, route["priority"], key[0], key[1],
                                    route_seq() + index, draft.now, draft.now))
        service.next_route_id += 1


def _route(draft: Draft, change: dict) -> tuple[Service, Route]:
    service = draft.service(change.get("service_id"), change["op"])
    route_id = change.get("route_id")
    if route_id is None:
        raise MissingField(f"{change['op']} needs route_id")
    for route in service.routes:
        if route.id == route_id:
            return service, route
    raise NotFound(f"route {route_id} not found in {service.id} (list them with 'arctic routes list --service "
                   f"{service.id}')")


def _route_update(draft: Draft, change: dict) -> None:
    service, route = _route(draft, change)
    data = load(RouteUpdate(), _body(change), partial=True)
    if not data:
        raise InvalidRequest("nothing to update: give priority, source_cidr and/or dest_cidr")
    merged = merged_route(route, data)
    clash = next((r.id for r in service.routes
                  if (r.source_cidr, r.dest_cidr) == (merged["source_cidr"], merged["dest_cidr"]) and r.id != route.id),
                 None)
    if clash is not None:
        raise AlreadyExists(f"route {clash} of {service.id} already has these CIDRs")
    route.priority, route.source_cidr, route.dest_cidr = merged["priority"], merged["source_cidr"], merged["dest_cidr"]


def _route_delete(draft: Draft, change: dict) -> None:
    service, route = _route(draft, change)
    service.routes.remove(route)


APPLY = {"service.create": _service_create, "service.update": _service_update, "service.delete": _service_delete,
         "route.add": _route_add, "route.update": _route_update, "route.delete": _route_delete}


# --- rendering ----------------------------------------------------------------------------------------------

def _preview(runtime, view: rendering.LocalView) -> Preview:
    """``view`` rendered and compared with what is applied (reconcile worker), or with nothing (no worker)."""
    worker = runtime.reconcile_worker
    if worker is not None:
        return worker.preview(view)
    return preview(offline_reconciler(), view, runtime.config, priorities={}, bind_addresses={},
                   qos_before="", dataplane_before=None)


def _render_planned(runtime, before: rendering.LocalView, planned: rendering.LocalView) -> str:
    if runtime.reconcile_worker is not None:
        return _preview(runtime, planned).diff  # applied kernel -> planned
    return compare(_preview(runtime, before), _preview(runtime, planned))  # nothing applied: desired now -> planned


@bp.get("/v1/plan")
@endpoint("This peer's rendered kernel configuration and its diff against what is applied",
          scope=scope_rules.SERVICES_READ, response=PlanViewSchema)
def current_plan():
    runtime = agent()
    view = rendering.load_view(runtime.db.read(), runtime.local_peer_id,
                               enabled=runtime.licence_state().data_plane_enabled)
    try:
        shown = _preview(runtime, view)
    except DesiredStateError as err:
        raise ApiError(f"the stored services cannot be rendered for this peer: {err}", code="INVALID_REQUEST",
                       status=422) from None
    worker = runtime.reconcile_worker
    out: dict[str, Any] = {"peer_id": runtime.local_peer_id, "kernel_managed": worker is not None,
                           "in_sync": worker is not None and not shown.changed}
    out.update(shown.to_dict())
    out["last_reconcile"] = worker.last.to_dict() if worker is not None and worker.last else None
    return out


@bp.post("/v1/plan")
@endpoint("Dry run: the kernel diff a list of service/route changes would cause here (nothing is written)",
          scope=scope_rules.SERVICES_READ, body=PlanRequest, response=PlanResultSchema, errors=(400,))
def plan_changes():
    runtime = agent()
    changes = load(PlanRequest(), json_body())["changes"]
    conn = runtime.db.read()
    peers, services = repo.list_peers(conn), repo.list_services(conn)
    draft = Draft(local_peer_id=runtime.local_peer_id, peers=peers,
                  services={s.id: copy.deepcopy(s) for s in services},
                  max_services=runtime.licence.max_services, now=to_rfc3339(runtime.clock()))
    errors = []
    for index, change in enumerate(changes):
        try:
            APPLY[change["op"]](draft, change)
        except ApiError as err:
            errors.append({"index": index, "op": change["op"], "code": err.code, "error": err.message})
    if errors:
        return {"valid": False, "errors": errors, "kernel_diff": {}}
    enabled = runtime.licence_state().data_plane_enabled
    before = rendering.build_view(draft.local_peer_id, peers, services, enabled=enabled)
    planned = rendering.build_view(draft.local_peer_id, draft.peers, draft.services.values(), enabled=enabled)
    try:
        diff = _render_planned(runtime, before, planned)
    except DesiredStateError as err:
        return {"valid": False, "errors": [{"index": None, "op": None, "code": "INVALID_REQUEST",
                                            "error": f"the planned state cannot be rendered: {err}"}],
                "kernel_diff": {}}
    return {"valid": True, "errors": [], "kernel_diff": {runtime.local_peer_id: diff}}
