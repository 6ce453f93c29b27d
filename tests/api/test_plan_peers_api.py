"""``POST /v1/plan`` covers every peer a change touches, each with its own preview.

Two in-process agents stand for a cluster of two: agent-a (the one the caller asks) and agent-b, which knows a's
peer record and is the target of the planned service. ``arctic.cluster.transport.raw`` (how one agent calls
another) is replaced by a relay into agent-b's app, so agent-b builds its own draft from the very request a
forwarded and renders its own kernel; the relay records every call, which is how the tests see that a forwarded
plan is not forwarded again. Both agents run with ``apply_kernel: false`` (diffs are "desired now -> planned").
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time

import pytest
import requests
from api.conftest import Api, make_api
from arctic.api import plan as plan_api
from arctic.api.forwarding import FORWARD_HEADER
from arctic.cluster import transport

B_ADDRESS = "198.51.100.2:8080"  # never dialled: the relay below answers for it
A_ADDRESS = "198.51.100.1:8080"
INTERFACE_SERVICE = {"requires_interface": True, "desired_ipv4_cidr": "192.168.100.10/24", "name": "web"}


def insert_peer(api: Api, peer_id: str, name: str, address: str) -> None:
    """Another agent's peer record with its real id (what joining would have replicated)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with sqlite3.connect(api.data_dir / "arctic.db", timeout=10) as conn:
        conn.execute("INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
                     " VALUES (?, ?, ?, ?, 0, 'active', ?, ?)",
                     (peer_id, name, base64.b64encode(bytes(32)).decode(), address, now, now))


class Relayed:
    """What ``transport.raw`` returns, built from agent-b's test-client response."""

    def __init__(self, resp) -> None:
        self.status_code, self.headers, self._json = resp.status_code, resp.headers, resp.get_json()

    def json(self):
        if self._json is None:
            raise ValueError("not JSON")
        return self._json


@pytest.fixture
def pair(api, issuer, tmp_path, monkeypatch):
    """(agent-a, agent-b, calls): b bootstrapped as its own agent, each knowing the other's peer record."""
    b = make_api(tmp_path / "b", issuer, api.clock)
    resp = b.client.post("/v1/bootstrap", json={"license": issuer.licence(), "name": "agent-b"})
    assert resp.status_code == 201, resp.get_json()
    b.creds = resp.get_json()
    b._token = b.token_for(b.creds["client_id"], b.creds["client_secret"])
    insert_peer(api, b.local_peer_id, "agent-b", B_ADDRESS)
    insert_peer(b, api.local_peer_id, "agent-a", A_ADDRESS)
    calls: list[dict] = []

    def relay(address, method, path, *, headers, data, params, timeout):
        calls.append({"address": address, "method": method, "path": path, "headers": dict(headers),
                      "data": data, "timeout": timeout})
        if address != B_ADDRESS:
            raise requests.ConnectionError(f"nothing at {address}")
        # The caller's token is valid on every peer of a real cluster; these two share no credentials, so
        # agent-b's own token stands in for it (the forwarded one was recorded above).
        relayed = dict(headers, Authorization=f"Bearer {b._token}")
        return Relayed(b.client.open(path, method=method, data=data, headers=relayed))

    monkeypatch.setattr(transport, "raw", relay)
    return api, b, calls


def payload(*changes: dict) -> bytes:
    return json.dumps({"changes": list(changes)}).encode()


def plan(api: Api, *changes: dict, **headers: str):
    resp = api.client.post("/v1/plan", data=payload(*changes), content_type="application/json",
                           headers={**api.headers(), **headers})
    assert resp.status_code == 200, resp.get_json()
    return resp


def create_on_b(b: Api) -> dict:
    return {"op": "service.create", "body": {"target_peer_id": b.local_peer_id, **INTERFACE_SERVICE}}


def test_an_interface_service_is_previewed_on_both_peers_each_rendering_the_same_planned_service(pair):
    a, b, calls = pair
    changes = (create_on_b(b), {"op": "route.add", "body": {"dest_cidr": "192.168.100.0/24", "priority": 100}})
    resp = plan(a, *changes)
    result = resp.get_json()

    assert result["valid"] and result["errors"] == []
    assert [(p["name"], p["peer_id"], p["local"], p["valid"], p["error"]) for p in result["peers"]] == [
        ("agent-a", a.local_peer_id, True, True, None), ("agent-b", b.local_peer_id, False, True, None)]
    a_part, b_part = result["peers"]
    assert result["kernel_diff"] == {a.local_peer_id: a_part["diff"], b.local_peer_id: b_part["diff"]}
    # the source intercepts: nftables and its data plane; it makes no interface
    assert any(line.startswith("+") and "ip daddr 192.168.100.0/24" in line and "tproxy" in line
               for line in a_part["diff"].splitlines()), a_part["diff"]
    assert a_part["changes"]["nftables"] and not a_part["changes"]["interfaces"]
    # the target makes the MACVLAN with the requested address, for the same planned service id as the source
    (planned_id,) = {line.split('"id": "')[1].split('"')[0] for line in a_part["diff"].splitlines()
                     if line.startswith('+') and '"id": "svc_' in line}
    assert f"+    # service {planned_id}: MACVLAN on" in b_part["diff"]
    assert '+        - "192.168.100.10/24"' in b_part["diff"]
    assert b_part["changes"]["interfaces"] and not b_part["changes"]["nftables"]
    # one forwarded request, the change list exactly as received, the caller's token, a bounded timeout
    (call,) = calls
    assert (call["address"], call["method"], call["path"]) == (B_ADDRESS, "POST", "/v1/plan")
    assert call["headers"][FORWARD_HEADER] == a.local_peer_id
    assert call["headers"]["Authorization"] == a.headers()["Authorization"]
    assert call["data"] == payload(*changes) and call["timeout"] == plan_api.PEER_TIMEOUT_SECONDS
    assert "Warning" not in resp.headers
    assert a.get("/v1/services").get_json() == [] and b.get("/v1/services").get_json() == []  # nothing written


def test_the_same_plan_renders_the_same_planned_id_on_both_peers_and_another_plan_another_id(pair):
    a, b, _calls = pair
    first = plan(a, create_on_b(b)).get_json()["peers"]
    again = plan(a, create_on_b(b)).get_json()["peers"]
    other = plan(a, {"op": "service.create", "body": {"target_peer_id": b.local_peer_id, "name": "other",
                                                      "requires_interface": True}}).get_json()["peers"]
    assert [p["diff"] for p in first] == [p["diff"] for p in again]  # deterministic, on both sides
    assert first[1]["diff"] != other[1]["diff"]


def test_a_forwarded_plan_answers_for_its_own_peer_only(pair):
    a, b, calls = pair
    result = plan(b, create_on_b(b), **{FORWARD_HEADER: a.local_peer_id}).get_json()
    assert [p["peer_id"] for p in result["peers"]] == [b.local_peer_id]
    assert list(result["kernel_diff"]) == [b.local_peer_id]
    assert calls == []  # b did not ask a back
    # the create without source_peer_id starts where the caller asked (a), as the real write would
    assert "+    # service svc_" in result["kernel_diff"][b.local_peer_id]


def test_a_create_sent_to_the_target_asks_the_source_for_its_part(pair):
    a, b, calls = pair
    body = {"source_peer_id": a.local_peer_id, "target_peer_id": b.local_peer_id, **INTERFACE_SERVICE}
    # b asks a: the relay has nothing at A_ADDRESS, so a is listed with why it could not be asked
    result = plan(b, {"op": "service.create", "body": body}).get_json()
    assert [(p["peer_id"], p["valid"]) for p in result["peers"]] == [(b.local_peer_id, True), (a.local_peer_id, None)]
    assert "cannot connect to 198.51.100.1:8080" in result["peers"][1]["error"]
    assert [c["address"] for c in calls] == [A_ADDRESS]


def test_a_peer_that_cannot_be_asked_is_listed_with_its_error_and_a_warning(pair, monkeypatch):
    a, b, _calls = pair

    def refused(address, method, path, **_kw):
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(transport, "raw", refused)
    resp = plan(a, create_on_b(b))
    result = resp.get_json()
    assert result["valid"] is True and list(result["kernel_diff"]) == [a.local_peer_id]
    unasked = result["peers"][1]
    assert (unasked["peer_id"], unasked["name"], unasked["valid"], unasked["diff"]) == (
        b.local_peer_id, "agent-b", None, None)
    assert unasked["error"] == f"cannot connect to {B_ADDRESS} (ConnectionError)"
    assert resp.headers["Warning"] == (f'299 arctic "agent-b ({b.local_peer_id}) was not asked for its dry run: '
                                       f'cannot connect to {B_ADDRESS} (ConnectionError)"')


def test_a_peer_that_does_not_answer_in_time_is_listed_with_the_timeout(pair, monkeypatch):
    a, b, _calls = pair

    def silent(address, method, path, *, timeout, **_kw):
        raise requests.ReadTimeout(f"read timed out after {timeout}")

    monkeypatch.setattr(transport, "raw", silent)
    unasked = plan(a, create_on_b(b)).get_json()["peers"][1]
    assert unasked["error"] == f"no answer from {B_ADDRESS} within 10 s"


def test_a_peer_known_to_be_unreachable_is_listed_without_being_asked(pair):
    a, b, calls = pair
    with sqlite3.connect(a.data_dir / "arctic.db", timeout=10) as conn:
        conn.execute("INSERT INTO peer_health (peer_id, reachable) VALUES (?, 0)", (b.local_peer_id,))
    result = plan(a, create_on_b(b)).get_json()
    assert result["peers"][1]["error"] == "unreachable (its last health check failed)"
    assert calls == []


def test_a_peer_that_refuses_the_plan_is_listed_with_its_reasons(pair):
    a, b, _calls = pair
    svc = a.post("/v1/services", json={"target_peer_id": b.local_peer_id}).get_json()  # not replicated to b
    resp = plan(a, {"op": "service.update", "service_id": svc["id"], "body": {"bandwidth_limit_mbps": 10}})
    result = resp.get_json()
    assert result["valid"] is True  # this agent would accept the write
    refusal = result["peers"][1]
    assert refusal["valid"] is False and refusal["error"] is None
    assert [e["code"] for e in refusal["errors"]] == ["NOT_FOUND"]
    assert f"agent-b ({b.local_peer_id}) would refuse this change: service not found" in resp.headers["Warning"]


def test_an_invalid_plan_asks_no_other_peer(pair):
    a, b, calls = pair
    result = plan(a, create_on_b(b), {"op": "route.delete", "route_id": 7}).get_json()
    assert result["valid"] is False and result["kernel_diff"] == {}
    assert [(p["peer_id"], p["valid"]) for p in result["peers"]] == [(a.local_peer_id, False)]
    assert calls == []
