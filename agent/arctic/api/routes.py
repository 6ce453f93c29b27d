"""Routes: source/destination CIDR rules that choose which connections use a service.

Listed in effective precedence order (``arctic.domain.precedence``), the same order the kernel
rules follow. A batch add is all-or-nothing; a route is identified within its service by its pair
of CIDRs, so the same pair cannot be added twice.
"""

from __future__ import annotations

import ipaddress
import time

from flask import Blueprint
from marshmallow import Schema, fields

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import NetworkCidr, StrictInteger
from arctic.api.forwarding import owner_answers, service_owner
from arctic.api.lookup import find_service
from arctic.api.rules import StoreCatalog, check_route_pair_free, existing_route
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.domain import precedence
from arctic.errors import ApiError, InvalidRequest, MissingField
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339

bp = Blueprint("routes", __name__)
log = get_logger("api")

PRIORITY_MIN, PRIORITY_MAX = 0, 1_000_000


class RouteInput(Schema):
    priority = StrictInteger(required=True, minimum=PRIORITY_MIN, maximum=PRIORITY_MAX,
                             metadata={"description": "higher wins when specificity is equal", "example": 100})
    source_cidr = NetworkCidr(allow_none=True)
    dest_cidr = NetworkCidr(allow_none=True)


class RouteUpdate(Schema):
    priority = StrictInteger(minimum=PRIORITY_MIN, maximum=PRIORITY_MAX)
    source_cidr = NetworkCidr(allow_none=True)
    dest_cidr = NetworkCidr(allow_none=True)


class RoutesAdd(Schema):
    routes = fields.List(fields.Nested(RouteInput), required=True)


class RoutesAdded(Schema):
    route_ids = fields.List(fields.Integer())
    count = fields.Integer()


class RouteSchema(Schema):
    id = fields.Integer(metadata={"example": 1})
    service_id = fields.String()
    priority = fields.Integer()
    source_cidr = fields.String(allow_none=True)
    dest_cidr = fields.String(allow_none=True)
    created_at = fields.String()


class ShadowSchema(Schema):
    service_id = fields.String(metadata={"example": "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"})
    route_id = fields.Integer(metadata={"example": 1})


class ListedRouteSchema(RouteSchema):
    state = fields.String(metadata={"description": "active, or shadowed: an earlier route (in precedence order, of "
                                                   "any service of the same source peer) has exactly this match",
                                    "example": "active"})
    shadowed_by = fields.Nested(ShadowSchema, allow_none=True)


def check_route_rules(route: dict, where: str = "route") -> None:
    src, dst = route.get("source_cidr"), route.get("dest_cidr")
    if not src and not dst:
        raise MissingField(f"{where} needs source_cidr or dest_cidr (or both)")
    if src and dst and ipaddress.ip_network(src).version != ipaddress.ip_network(dst).version:
        raise ApiError(f"{where}: source_cidr {src} and dest_cidr {dst} are different address families",
                       code="INVALID_CIDR", status=400)


def load_route_batch(data: dict) -> list[dict]:
    """The routes of ``{"routes": [...]}``, each valid, none repeated within the batch (all or nothing)."""
    if not isinstance(data.get("routes"), list) or not data["routes"]:
        raise InvalidRequest('body needs a non-empty "routes" array, e.g. {"routes": [{"dest_cidr": '
                             '"192.168.100.0/24", "priority": 100}]}')
    routes = load(RoutesAdd(), data)["routes"]
    seen: set[tuple] = set()
    for index, route in enumerate(routes):
        check_route_rules(route, f"routes[{index}]")
        key = (route.get("source_cidr"), route.get("dest_cidr"))
        if key in seen:
            raise InvalidRequest(f"routes[{index}] repeats source {key[0]} / destination {key[1]} within the batch")
        seen.add(key)
    return routes


def load_route_update(data: dict) -> dict:
    """The body of a (partial) route update: valid and not empty."""
    body = load(RouteUpdate(), data, partial=True)
    if not body:
        raise InvalidRequest("nothing to update: give priority, source_cidr and/or dest_cidr")
    return body


def merged_route(current, body: dict) -> dict:
    """A route after a (partial) update, checked like a new one."""
    merged = {"priority": current.priority, "source_cidr": current.source_cidr, "dest_cidr": current.dest_cidr} | body
    check_route_rules(merged)
    return merged


def route_seq() -> int:
    """Insertion order of a route (microseconds): the last precedence tie-break (DESIGN.md), also in dry runs."""
    return time.time_ns() // 1000


@bp.get("/v1/services/<service_id>/routes")
@endpoint("List a service's routes in precedence order, each with its effective state",
          scope=scope_rules.SERVICES_READ, response=ListedRouteSchema, many=True, errors=(404,))
def list_routes(service_id: str):
    service = find_service(service_id)
    rivals = repo.list_services(agent().db.read(), source_peer_id=service.source_peer_id)
    winners = {(r.service_id, r.id): w for r, w in precedence.with_winners(r for s in rivals for r in s.routes)}
    listed = []
    for route in service.routes:
        winner = winners.get((route.service_id, route.id))
        listed.append({**route.to_api(), "state": "shadowed" if winner else "active",
                       "shadowed_by": {"service_id": winner.service_id, "route_id": winner.id} if winner else None})
    return listed


@bp.post("/v1/services/<service_id>/routes")
@endpoint("Add routes to a service (all or nothing)", scope=scope_rules.SERVICES_WRITE, body=RoutesAdd,
          response=RoutesAdded, status=201, write=True, errors=(400, 404, 409, 422))
@owner_answers(service_owner, parse=lambda: load_route_batch(json_body()))
def add_routes(service_id: str, body: list[dict]):
    runtime = agent()
    now = to_rfc3339(runtime.clock())
    with runtime.db.write() as tx:
        service = find_service(service_id, tx)
        catalog = StoreCatalog(tx)
        ids = []
        for route in body:
            check_route_pair_free(catalog, service.id, route)
            ids.append(repo.insert_route(tx, service.id, route["priority"], route.get("source_cidr"),
                                         route.get("dest_cidr"), route_seq(), now))
    log.info("routes added", service_id=service.id, route_ids=ids)
    return {"route_ids": ids, "count": len(ids)}, 201


@bp.put("/v1/services/<service_id>/routes/<int:route_id>")
@endpoint("Update a route (partial)", scope=scope_rules.SERVICES_WRITE, body=RouteUpdate, response=RouteSchema,
          write=True, errors=(400, 404, 409, 422))
@owner_answers(service_owner, parse=lambda: load_route_update(json_body()))
def update_route(service_id: str, route_id: int, body: dict):
    runtime = agent()
    with runtime.db.write() as tx:
        service = find_service(service_id, tx)
        merged = merged_route(existing_route(service, route_id), body)
        check_route_pair_free(StoreCatalog(tx), service.id, merged, route_id=route_id)
        repo.update_route(tx, service.id, route_id, body, to_rfc3339(runtime.clock()))
        updated = repo.get_route(tx, service.id, route_id)
    log.info("route updated", service_id=service.id, route_id=route_id, fields=sorted(body))
    return updated.to_api()


@bp.delete("/v1/services/<service_id>/routes/<int:route_id>")
@endpoint("Delete a route", scope=scope_rules.SERVICES_WRITE, write=True, errors=(404,))
@owner_answers(service_owner)
def delete_route(service_id: str, route_id: int):
    runtime = agent()
    with runtime.db.write() as tx:
        service = find_service(service_id, tx)
        repo.delete_route(tx, service.id, existing_route(service, route_id).id)
    log.info("route deleted", service_id=service.id, route_id=route_id)
    return {"deleted": True, "service_id": service.id, "id": route_id}
