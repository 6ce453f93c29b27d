# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""An in-memory Arctic agent behind a fake ``fetch_url``, for unit tests.

Why a fake agent rather than canned responses: the modules' promises (idempotence, check mode
never writing, routes reconciled by CIDR pair) are about *state*, so tests assert on the state the
agent ends up with and on the requests it received, exactly as an operator would observe them.
The fake sits at the HTTP boundary (``fetch_url``), so the client's real request building, JSON
encoding, auth headers and error mapping are all exercised.
"""

from __future__ import annotations

import copy
import json
import re
from urllib.parse import parse_qs, urlsplit

PEER_A = "peer_01HZX3H1C5M2S8J3Q9W4E7R6TA"
PEER_B = "peer_01HZX3H8D0A6P1K5V2N9F3G4HB"
AGENT_URL = "http://agent.test:8080"


class FakeResponse:
    def __init__(self, body: bytes):
        self._body = body

    def read(self) -> bytes:
        return self._body


class Call:
    """One request as the agent saw it."""

    def __init__(self, method: str, path: str, query: dict, headers: dict, body):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "DELETE") and self.path not in ("/v1/plan", "/v1/oauth/token")

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.body!r}"


def error(status: int, code: str, message: str) -> tuple:
    return status, {"error": message, "code": code}


class FakeAgent:
    """Peers, services and routes held in memory, answering the documented API."""

    def __init__(self):
        self.peers = [
            {"id": PEER_A, "name": "gateway", "address": "198.18.0.1:8080", "is_local": True},
            {"id": PEER_B, "name": "branch", "address": "198.18.0.2:8080", "is_local": False},
        ]
        self.services: dict = {}
        self.calls: list = []
        self.token = None  # when set, every non-public request needs "Bearer <token>"
        self.clients: dict = {}  # client_id -> secret accepted by /v1/oauth/token
        self.expired_tokens: set = set()
        self.minted = 0
        self.plan_supported = True
        self.plan_answer: dict | None = None
        self.unreachable = False
        self.raw_answers: dict = {}  # (method, path) -> (status, body text) served verbatim
        self.warning_header: str | None = None  # a ``Warning`` header sent with every answer (RFC 7234 values)
        self._next_service = 1

    # -- what tests inspect ---------------------------------------------------------------

    @property
    def writes(self) -> list:
        return [c for c in self.calls if c.is_write]

    def service_named(self, name: str) -> dict | None:
        for service in self.services.values():
            if service["name"] == name:
                return service
        return None

    def add_service(self, name: str, routes: tuple = (), **fields) -> dict:
        """Seed a service directly (not through the API, so it is not a recorded call)."""
        service_id = f"svc_01HZX3J9V6Q4G7W1T6B8Y2N5K{self._next_service}"
        self._next_service += 1
        service = {
            "id": service_id, "name": name, "source_peer_id": PEER_A, "target_peer_id": PEER_B,
            "transport_type": "tcp", "requires_interface": False, "desired_ipv4_cidr": None,
            "desired_ipv6_cidr": None, "fully_transparent": False, "bandwidth_limit_mbps": 0,
            "routes": [], "next_route": 1,
        }
        service.update(fields)
        self.services[service_id] = service
        for route in routes:
            self._add_route(service, dict(route))
        return service

    # -- the fake fetch_url ---------------------------------------------------------------

    def fetch_url(self, module, url, data=None, headers=None, method=None, timeout=10, **kwargs):
        parts = urlsplit(url)
        headers = dict(headers or {})
        body = None
        if data:
            text = data.decode("utf-8")
            if headers.get("Content-Type") == "application/x-www-form-urlencoded":
                body = {k: v[0] for k, v in parse_qs(text).items()}
            else:
                body = json.loads(text)
        call = Call(method or "GET", parts.path, parse_qs(parts.query), headers, body)
        self.calls.append(call)
        if self.unreachable:
            return None, {"status": -1, "msg": "Request failed: <urlopen error [Errno 111] Connection refused>"}
        if (call.method, call.path) in self.raw_answers:
            status, text = self.raw_answers[(call.method, call.path)]
            payload_bytes = text.encode("utf-8")
        else:
            status, payload = self._dispatch(call)
            payload_bytes = b"" if payload is None else json.dumps(payload).encode("utf-8")
        info = {"status": status, "msg": "OK"}
        if self.warning_header is not None:
            info["warning"] = self.warning_header  # fetch_url lower-cases header names in ``info``
        if status >= 400:
            return None, dict(info, body=payload_bytes, msg=f"HTTP Error {status}")
        return FakeResponse(payload_bytes), info

    # -- routing ----------------------------------------------------------------------------

    def _authorised(self, call: Call):
        if self.token is None and not self.clients:
            return None
        auth = call.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token in self.expired_tokens:
            return error(401, "TOKEN_EXPIRED", "token expired")
        if token is None or (token != self.token and not token.startswith("minted-")):
            return error(401, "UNAUTHORIZED", "unauthorized")
        return None

    def _dispatch(self, call: Call) -> tuple:
        if call.path == "/v1/oauth/token":
            return self._oauth(call.body or {})
        refused = self._authorised(call)
        if refused:
            return refused
        routes = [
            ("GET", r"/v1/peers", self._list_peers),
            ("POST", r"/v1/peers", self._add_peer),
            ("PUT", r"/v1/peers/([^/]+)", self._update_peer),
            ("DELETE", r"/v1/peers/([^/]+)", self._delete_peer),
            ("GET", r"/v1/services", self._list_services),
            ("POST", r"/v1/services", self._create_service),
            ("GET", r"/v1/services/([^/]+)", self._get_service),
            ("PUT", r"/v1/services/([^/]+)", self._update_service),
            ("DELETE", r"/v1/services/([^/]+)", self._delete_service),
            ("POST", r"/v1/services/([^/]+)/routes", self._add_routes),
            ("PUT", r"/v1/services/([^/]+)/routes/(\d+)", self._update_route),
            ("DELETE", r"/v1/services/([^/]+)/routes/(\d+)", self._delete_route),
            ("POST", r"/v1/plan", self._plan),
        ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, call.path)
            if match and method == call.method:
                return handler(call, *match.groups())
        return error(404, "NOT_FOUND", "no such endpoint")

    def _oauth(self, form: dict) -> tuple:
        if form.get("grant_type") != "client_credentials":
            return error(400, "INVALID_REQUEST", "grant_type must be client_credentials")
        if self.clients.get(form.get("client_id")) != form.get("client_secret"):
            return error(401, "UNAUTHORIZED", "invalid client credentials")
        self.minted += 1
        return 200, {"access_token": f"minted-{self.minted}", "token_type": "Bearer", "expires_in": 3600}

    # peers

    def _list_peers(self, call):
        return 200, copy.deepcopy(self.peers)

    def _add_peer(self, call):
        address = call.body.get("address")
        if not address:
            return error(400, "INVALID_REQUEST", "address is required (host:port)")
        if any(p["address"] == address for p in self.peers):
            return error(409, "ALREADY_EXISTS", f"peer {address} is already in the cluster")
        peer = {"id": f"peer_01HZX3HZZZZZZZZZZZZZZZZZ{len(self.peers):02d}", "name": call.body.get("name", ""),
                "address": address, "is_local": False}
        self.peers.append(peer)
        return 201, copy.deepcopy(peer)

    def _peer(self, peer_id):
        return next((p for p in self.peers if p["id"] == peer_id), None)

    def _update_peer(self, call, peer_id):
        peer = self._peer(peer_id)
        if peer is None:
            return error(404, "NOT_FOUND", "Peer not found")
        peer.update(call.body)
        return 200, copy.deepcopy(peer)

    def _delete_peer(self, call, peer_id):
        peer = self._peer(peer_id)
        if peer is None:
            return error(404, "NOT_FOUND", "Peer not found")
        self.peers.remove(peer)
        return 204, None

    # services

    def _public(self, service, detail):
        view = {k: v for k, v in service.items() if k != "next_route"}
        view["routes"] = [dict(r, service_id=service["id"]) for r in service["routes"]]
        if not detail:
            view["route_count"] = len(view.pop("routes"))
        return copy.deepcopy(view)

    def _list_services(self, call):
        found = list(self.services.values())
        for key in ("source_peer_id", "target_peer_id"):
            if key in call.query:
                found = [s for s in found if s[key] == call.query[key][0]]
        return 200, [self._public(s, False) for s in found]

    def _create_service(self, call):
        body = dict(call.body)
        if "target_peer_id" not in body:
            return error(400, "MISSING_FIELD", "target_peer_id is required")
        for key in ("source_peer_id", "target_peer_id"):
            if key in body and self._peer(body[key]) is None:
                return error(404, "NOT_FOUND", f"Peer not found: {body[key]}")
        if body.get("transport_type", "tcp") not in ("tcp", "kcp"):
            return error(400, "INVALID_TRANSPORT", "Transport must be tcp or kcp")
        if body.get("name") and self.service_named(body["name"]):
            return error(409, "ALREADY_EXISTS", f"a service named {body['name']!r} exists")
        service = self.add_service(body.pop("name", None), **body)
        return 201, self._public(service, False)

    def _get_service(self, call, service_id):
        service = self.services.get(service_id)
        if service is None:
            return error(404, "NOT_FOUND", "Service not found")
        return 200, self._public(service, True)

    def _update_service(self, call, service_id):
        service = self.services.get(service_id)
        if service is None:
            return error(404, "NOT_FOUND", "Service not found")
        if call.body.get("bandwidth_limit_mbps", 0) < 0:
            return error(400, "INVALID_REQUEST", "bandwidth_limit_mbps must be 0 (unlimited) or more")
        service.update(call.body)
        return 200, self._public(service, False)

    def _delete_service(self, call, service_id):
        if self.services.pop(service_id, None) is None:
            return error(404, "NOT_FOUND", "Service not found")
        return 204, None

    # routes

    def _add_route(self, service, route):
        route = dict(route, id=service["next_route"])
        service["next_route"] += 1
        service["routes"].append(route)
        return route["id"]

    def _add_routes(self, call, service_id):
        service = self.services.get(service_id)
        if service is None:
            return error(404, "NOT_FOUND", "Service not found")
        routes = call.body.get("routes")
        if not isinstance(routes, list):
            return error(400, "INVALID_REQUEST", "routes array is required")
        ids = [self._add_route(service, r) for r in routes]
        return 201, {"route_ids": ids, "count": len(ids)}

    def _route(self, service_id, route_id):
        service = self.services.get(service_id)
        if service is None:
            return None, None
        return service, next((r for r in service["routes"] if r["id"] == int(route_id)), None)

    def _update_route(self, call, service_id, route_id):
        service, route = self._route(service_id, route_id)
        if route is None:
            return error(404, "NOT_FOUND", "Route not found")
        route.update(call.body)
        return 200, dict(route, service_id=service_id)

    def _delete_route(self, call, service_id, route_id):
        service, route = self._route(service_id, route_id)
        if route is None:
            return error(404, "NOT_FOUND", "Route not found")
        service["routes"].remove(route)
        return 204, None

    # dry run

    def _plan(self, call):
        if not self.plan_supported:
            return error(404, "NOT_FOUND", "no such endpoint")
        if self.plan_answer is not None:
            return 200, self.plan_answer
        ops = ", ".join(change["op"] for change in call.body["changes"])
        diff = f"--- live\n+++ planned\n+# {ops}\n"
        return 200, {"valid": True, "errors": [], "kernel_diff": {PEER_A: diff},
                     "peers": [{"peer_id": PEER_A, "name": "gateway", "local": True, "valid": True, "errors": [],
                                "diff": diff, "changes": {"nftables": True}, "interface_errors": {},
                                "error": None}]}
