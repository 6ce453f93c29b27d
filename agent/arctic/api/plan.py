"""Dry runs: what this peer's kernel looks like now (``GET /v1/plan``) and would look like after some changes
(``POST /v1/plan``), as rendered text and a unified diff. Nothing is ever written.

``POST /v1/plan`` takes ``{"changes": [{"op", "service_id"?, "route_id"?, "body"?}, ...]}`` with the operations
``service.create|update|delete`` and ``route.add|update|delete``, applies them in order to an in-memory copy of the
services, and validates each body with the very schemas and rules of the real endpoints (imported from
``arctic.api.services`` / ``arctic.api.routes``, and from ``arctic.api.rules`` for the rules that look at other
records, with the ``Draft`` as their catalog), so a plan is valid exactly when the writes would be accepted.
A ``route.add`` without ``service_id`` belongs to the service created last in the same plan (how Ansible's check
mode describes "create a service with these routes"). The answer is
``{"valid", "errors": [{"index", "op", "code", "error"}], "kernel_diff": {"<peer id>": "<unified diff>"},
"peers": [{"peer_id", "name", "local", "valid", "errors", "diff", "changes", "interface_errors", "error"}]}``;
each diff covers nftables, policy routing, service interfaces, shaping and the data-plane config of one peer.

Every peer a change touches shows its own diff: the source peer intercepts, the target peer makes the service's
MACVLAN and addresses. This agent previews its own kernel and asks each other touched peer (a changed service's
source and target) for ITS preview of the same change: the request as received (body and the caller's bearer
token, valid on every peer) with ``X-Arctic-Forwarded-By``, a bounded timeout, never chained (a forwarded plan
answers for its own peer only). Each peer builds its own draft from that same change list, so they must agree on
what the draft contains:

* the id of a service the plan creates (its interface name and MAC derive from it) is not random but derived
  from the change list, the create's position in it and the peer the caller asked;
* a create without ``source_peer_id`` starts at the peer the caller asked (``X-Arctic-Forwarded-By`` on a
  forwarded plan), as the real write would.

``kernel_diff`` holds the diff of every peer that answered; ``peers`` lists every touched peer, a peer that could
not be asked (or refused the plan) with ``error`` (or ``valid: false`` and its ``errors``), and each such peer is
also named in a ``Warning`` response header, which the CLI and the Ansible modules show.
"""

from __future__ import annotations

import copy
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Blueprint, g, request
from marshmallow import Schema, fields, validate
from ulid import ULID

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import StrictInteger, StrictString
from arctic.api.forwarding import FORWARD_HEADER
from arctic.api.lookup import find_peer
from arctic.api.routes import (
    RouteInput,
    check_route_rules,
    load_route_batch,
    load_route_update,
    merged_route,
    route_seq,
)
from arctic.api.rules import (
    check_desired_addresses_free,
    check_name_free,
    check_route_pair_free,
    check_service_limit,
    existing_route,
    existing_service,
)
from arctic.api.services import DEFAULTS, ServiceCreate, ServiceUpdate, check_service_rules, checked_update
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.cluster import transport
from arctic.errors import ApiError, MissingField
from arctic.ids import parse_id
from arctic.logs import get_logger
from arctic.netconf import rendering
from arctic.netconf.errors import DesiredStateError
from arctic.netconf.offline import offline_reconciler
from arctic.netconf.preview import Preview, compare, preview
from arctic.store import repository as repo
from arctic.store.records import Peer, Route, Service
from arctic.timeutil import to_rfc3339

bp = Blueprint("plan", __name__)
log = get_logger("api")

OPS = ("service.create", "service.update", "service.delete", "route.add", "route.update", "route.delete")
PEER_TIMEOUT_SECONDS = 10.0  # per touched peer asked for its preview (connect, then each read)
MAX_PARALLEL_ASKS = 8


class PlanChange(Schema):
    op = StrictString(required=True, validate=validate.OneOf(OPS, error=f"op must be one of {', '.join(OPS)}"))
    service_id = StrictString(metadata={"description": "service to change; omit on route.add after service.create"})
    route_id = StrictInteger(minimum=1, metadata={"description": "route.update / route.delete"})
    body = fields.Dict(metadata={"description": "what the real endpoint would get as its JSON body"})


class PlanRequest(Schema):
    changes = fields.List(fields.Nested(PlanChange), required=True)


class PlanErrorSchema(Schema):
    index = fields.Integer(allow_none=True)
    op = fields.String(allow_none=True)
    code = fields.String()
    error = fields.String()


class PlanPeerSchema(Schema):
    peer_id = fields.String()
    name = fields.String(allow_none=True)
    local = fields.Boolean(metadata={"description": "the agent that answered this request"})
    valid = fields.Boolean(allow_none=True, metadata={"description": "null when the peer could not be asked"})
    errors = fields.List(fields.Nested(PlanErrorSchema), metadata={"description": "why this peer refuses the plan"})
    diff = fields.String(allow_none=True, metadata={"description": "this peer's unified diff (applied -> planned)"})
    changes = fields.Dict(keys=fields.String(), values=fields.Boolean(), allow_none=True,
                          metadata={"description": "section (nftables, policy, interfaces, qos, dataplane) -> changes"})
    interface_errors = fields.Dict(keys=fields.String(), values=fields.String(),
                                   metadata={"description": "service id -> why its interface cannot be made there"})
    error = fields.String(allow_none=True, metadata={"description": "why this peer could not be asked"})


class PlanResultSchema(Schema):
    valid = fields.Boolean(metadata={"description": "whether THIS agent would accept the writes"})
    errors = fields.List(fields.Nested(PlanErrorSchema))
    kernel_diff = fields.Dict(keys=fields.String(), values=fields.String(),
                              metadata={"description": "peer id -> unified diff (applied -> planned), every peer "
                                                       "that answered"})
    peers = fields.List(fields.Nested(PlanPeerSchema),
                        metadata={"description": "every peer the changes touch, this agent first"})


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
    """The store with the plan's changes applied so far; the ``rules.Catalog`` the planned changes are checked in."""

    local_peer_id: str
    origin_peer_id: str  # the peer the caller asked: this one, or the one that forwarded the plan here
    seed: str  # digest of the change list and the origin: the same on every peer asked about this plan
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
        return self.services.get(self.aliases.get(ref, "")) or existing_service(self, ref)

    # rules.Catalog

    def service_by_id(self, service_id: str) -> Service | None:
        return self.services.get(service_id)

    def service_id_named(self, name: str) -> str | None:
        return next((s.id for s in self.services.values() if s.name == name), None)

    def service_count(self) -> int:
        return len(self.services)

    def service_limit(self) -> int:
        return self.max_services

    def interface_services_of(self, target_peer_id: str) -> list[Service]:
        return [s for s in self.services.values() if s.target_peer_id == target_peer_id and s.requires_interface]

    def route_id_matching(self, service_id: str, source_cidr: str | None, dest_cidr: str | None) -> int | None:
        service = self.services.get(service_id)
        return next((r.id for r in (service.routes if service is not None else [])
                     if (r.source_cidr or "", r.dest_cidr or "") == (source_cidr or "", dest_cidr or "")), None)

    def peer_name(self, peer_id: str) -> str | None:
        return _peer_name(self.peers, peer_id)

    def new_service_id(self) -> str:
        """The id of the next service this plan creates. Not random: every peer asked about the same plan renders
        the same service (interface name and MAC derive from its id), so their previews line up. A zero ULID
        time marks it as planned; a real create gets a fresh id."""
        digest = hashlib.blake2b(f"{self.seed}/{len(self.created)}".encode(), digest_size=10,
                                 person=b"arctic-plan").digest()
        return f"svc_{ULID.from_bytes(bytes(6) + digest)}"


def plan_seed(origin_peer_id: str, changes: list[dict]) -> str:
    text = json.dumps({"origin": origin_peer_id, "changes": changes}, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _body(change: dict) -> dict:
    body = change.get("body")
    return {} if body is None else body


def _service_create(draft: Draft, change: dict) -> None:
    data = load(ServiceCreate(), _body(change))
    svc = {**DEFAULTS, **data}
    svc["source_peer_id"] = find_peer(data.get("source_peer_id") or draft.origin_peer_id, field="source peer").id
    svc["target_peer_id"] = find_peer(svc["target_peer_id"], field="target peer").id
    check_service_rules(svc)
    check_name_free(draft, svc["name"])
    check_desired_addresses_free(draft, svc)
    check_service_limit(draft)
    sid = draft.new_service_id()
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
    check_name_free(draft, data.get("name"), current=current)
    check_desired_addresses_free(draft, vars(current) | data, current=current)
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
    for index, route in enumerate(routes):
        check_route_pair_free(draft, service.id, route)
        service.routes.append(Route(service.id, service.next_route_id, route["priority"], route.get("source_cidr"),
                                    route.get("dest_cidr"), route_seq() + index, draft.now, draft.now))
        service.next_route_id += 1


def _route(draft: Draft, change: dict) -> tuple[Service, Route]:
    service = draft.service(change.get("service_id"), change["op"])
    route_id = change.get("route_id")
    if route_id is None:
        raise MissingField(f"{change['op']} needs route_id")
    return service, existing_route(service, route_id)


def _route_update(draft: Draft, change: dict) -> None:
    service, route = _route(draft, change)
    merged = merged_route(route, load_route_update(_body(change)))
    check_route_pair_free(draft, service.id, merged, route_id=route.id)
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


def _render_planned(runtime, before: rendering.LocalView, planned: rendering.LocalView) -> dict[str, Any]:
    """This peer's part of a plan: ``diff``, ``changes`` per section and ``interface_errors``."""
    if runtime.reconcile_worker is not None:
        shown = _preview(runtime, planned)  # applied kernel -> planned
        return {"diff": shown.diff, "changes": shown.to_dict()["changes"], "interface_errors": dict(shown.plan.errors)}
    old, new = _preview(runtime, before), _preview(runtime, planned)  # nothing applied: desired now -> planned
    changes = {"nftables": old.plan.nftables != new.plan.nftables, "policy": old.plan.policy != new.plan.policy,
               "interfaces": old.plan.interfaces != new.plan.interfaces, "qos": old.qos != new.qos,
               "dataplane": old.dataplane != new.dataplane}
    return {"diff": compare(old, new), "changes": changes, "interface_errors": dict(new.plan.errors)}


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
@endpoint("Dry run: the kernel diff a list of service/route changes would cause on every peer they touch "
          "(nothing is written anywhere)",
          scope=scope_rules.SERVICES_READ, body=PlanRequest, response=PlanResultSchema, errors=(400,))
def plan_changes():
    runtime = agent()
    changes = load(PlanRequest(), json_body())["changes"]
    origin = parse_id("peer", request.headers.get(FORWARD_HEADER) or "") or runtime.local_peer_id
    conn = runtime.db.read()
    peers, services = repo.list_peers(conn), repo.list_services(conn)
    draft = Draft(local_peer_id=runtime.local_peer_id, origin_peer_id=origin, seed=plan_seed(origin, changes),
                  peers=peers, services={s.id: copy.deepcopy(s) for s in services},
                  max_services=runtime.licence.max_services, now=to_rfc3339(runtime.clock()))
    errors = []
    for index, change in enumerate(changes):
        try:
            APPLY[change["op"]](draft, change)
        except ApiError as err:
            errors.append({"index": index, "op": change["op"], "code": err.code, "error": err.message})
    here = {"peer_id": runtime.local_peer_id, "name": _peer_name(peers, runtime.local_peer_id), "local": True}
    if errors:
        return _refused(here, errors)
    enabled = runtime.licence_state().data_plane_enabled
    before = rendering.build_view(runtime.local_peer_id, peers, services, enabled=enabled)
    planned = rendering.build_view(runtime.local_peer_id, draft.peers, draft.services.values(), enabled=enabled)
    try:
        here.update(_render_planned(runtime, before, planned), valid=True, errors=[], error=None)
    except DesiredStateError as err:
        return _refused(here, [{"index": None, "op": None, "code": "INVALID_REQUEST",
                                "error": f"the planned state cannot be rendered: {err}"}])
    entries = [here]
    if not request.headers.get(FORWARD_HEADER):  # a forwarded plan answers for its own peer only
        others = _touched_peers({s.id: s for s in services}, draft.services) - {runtime.local_peer_id}
        entries += _ask_peers(runtime, sorted(others))
    result = {"valid": True, "errors": [],
              "kernel_diff": {e["peer_id"]: e["diff"] for e in entries if e["valid"] and e["diff"] is not None},
              "peers": entries}
    warnings = [_warning_text(e) for e in entries if not e["valid"]]
    if warnings:
        return result, 200, {"Warning": ", ".join(f'299 arctic "{_quoted(text)}"' for text in warnings)}
    return result


def _refused(here: dict, errors: list[dict]) -> dict:
    here.update(valid=False, errors=errors, diff=None, changes=None, interface_errors={}, error=None)
    return {"valid": False, "errors": errors, "kernel_diff": {}, "peers": [here]}


def _peer_name(peers: list[Peer], peer_id: str) -> str | None:
    return next((p.name for p in peers if p.id == peer_id), None)


def _touched_peers(before: dict[str, Service], after: dict[str, Service]) -> set[str]:
    """Both peers of every service the changes create, alter or delete."""
    touched: set[str] = set()
    for sid in before.keys() | after.keys():
        old, new = before.get(sid), after.get(sid)
        if old != new:
            touched |= {peer for svc in (old, new) if svc is not None
                        for peer in (svc.source_peer_id, svc.target_peer_id)}
    return touched


# --- the other peers' previews ---------------------------------------------------------------------------------

def _ask_peers(runtime, peer_ids: list[str]) -> list[dict]:
    """Each peer's own preview of this very request (listed with ``error`` when it cannot be asked)."""
    conn = runtime.db.read()
    unreachable = repo.unreachable_peer_ids(conn)
    principal = getattr(g, "principal", None)
    token = request.headers.get("Authorization")
    headers = {FORWARD_HEADER: runtime.local_peer_id, "Content-Type": "application/json"}
    body = request.get_data()
    entries, asks = [], {}
    for peer_id in peer_ids:
        peer = repo.get_peer(conn, peer_id)
        entry = {"peer_id": peer_id, "name": peer.name if peer else None, "local": False}
        entries.append(entry)
        if peer is None:
            entry.update(_unasked("this agent does not know that peer"))
        elif not peer.is_member:
            entry.update(_unasked(f"not an active member of this cluster ({peer.state})"))
        elif peer_id in unreachable:
            entry.update(_unasked("unreachable (its last health check failed)"))
        elif (principal is not None and principal.via == "recovery") or not token:
            entry.update(_unasked(f"the recovery token only authorises this agent; ask {peer.address} directly"))
        else:
            asks[peer_id] = peer.address
    if asks:
        headers["Authorization"] = token
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_ASKS, len(asks))) as pool:
            answers = {peer_id: pool.submit(_ask_peer, peer_id, address, headers, body)
                       for peer_id, address in asks.items()}
            for entry in entries:
                if entry["peer_id"] in answers:
                    entry.update(answers[entry["peer_id"]].result())
    return entries


def _ask_peer(peer_id: str, address: str, headers: dict, body: bytes) -> dict:
    try:
        resp = transport.raw(address, "POST", "/v1/plan", headers=headers, data=body, params=None,
                             timeout=PEER_TIMEOUT_SECONDS)
    except requests.Timeout:
        return _unasked(f"no answer from {address} within {PEER_TIMEOUT_SECONDS:g} s")
    except Exception as err:  # noqa: BLE001 - any transport failure: the peer could not be asked
        return _unasked(f"cannot connect to {address} ({type(err).__name__})")
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    if resp.status_code != 200 or not isinstance(answer, dict):
        said = answer.get("error") if isinstance(answer, dict) else None
        return _unasked(f"answered HTTP {resp.status_code}" + (f": {said}" if said else ""))
    own = next((p for p in answer.get("peers") or [] if isinstance(p, dict) and p.get("peer_id") == peer_id), None)
    if own is None:  # an agent from before per-peer plans: its kernel_diff is about itself only
        own = {"valid": answer.get("valid"), "errors": answer.get("errors"),
               "diff": (answer.get("kernel_diff") or {}).get(peer_id)}
    log.debug("peer previewed a plan", peer=peer_id, valid=own.get("valid"))
    return {"valid": own.get("valid") is True, "errors": own.get("errors") or [], "diff": own.get("diff"),
            "changes": own.get("changes"), "interface_errors": own.get("interface_errors") or {}, "error": None}


def _unasked(reason: str) -> dict:
    return {"valid": None, "errors": [], "diff": None, "changes": None, "interface_errors": {}, "error": reason}


def _warning_text(entry: dict) -> str:
    who = f"{entry['name']} ({entry['peer_id']})" if entry.get("name") else entry["peer_id"]
    if entry.get("error"):
        return f"{who} was not asked for its dry run: {entry['error']}"
    said = "; ".join(str(e.get("error")) for e in entry.get("errors") or [] if isinstance(e, dict))
    return f"{who} would refuse this change: {said or 'no reason given'}"


def _quoted(text: str) -> str:
    """``text`` as the quoted-string of a Warning header: one line, quotes and backslashes escaped."""
    return " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
