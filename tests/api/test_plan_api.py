"""``/v1/plan``: dry runs render the kernel change, validate like the real endpoints, and never write anything.

These agents run with ``apply_kernel: false``, so the diff is "current desired state -> planned" (the lab test
``tests/lab/test_service_traffic.py`` covers the live-kernel variant).
"""

from __future__ import annotations

import hashlib

import pytest

STATE_TABLES = ("peers", "services", "routes", "credentials", "replica")


def state(api) -> str:
    digest = hashlib.sha256()
    for table in STATE_TABLES:
        for row in api.runtime.db.read().execute(f"SELECT * FROM {table} ORDER BY 1, 2"):  # noqa: S608
            digest.update(repr(sorted((k, v) for k, v in dict(row).items() if k != "last_used_at")).encode())
    return digest.hexdigest()


def plan(api, *changes) -> dict:
    resp = api.post("/v1/plan", json={"changes": list(changes)})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


@pytest.fixture
def service(api, peer_b) -> dict:
    svc = api.create_service(target_peer_id=peer_b)
    resp = api.post(f"/v1/services/{svc['id']}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24",
                                                                           "priority": 100}]})
    assert resp.status_code == 201
    return svc


def test_get_plan_shows_the_rendered_table_of_this_peers_services(api, service):
    shown = api.get("/v1/plan").get_json()
    assert shown["peer_id"] == api.local_peer_id and shown["kernel_managed"] is False
    assert f'comment "arctic {service["id"]} route 1"' in shown["nftables"]
    assert "ip daddr 192.168.100.0/24 tcp flags syn / fin,syn,rst,ack tproxy ip to :61080" in shown["nftables"]
    assert [s["id"] for s in shown["dataplane"]["services"]] == [service["id"]]


def test_a_create_with_routes_is_planned_as_a_kernel_diff_and_nothing_is_written(api, peer_b, service):
    before = state(api)
    result = plan(api,
                  {"op": "service.create", "body": {"target_peer_id": peer_b, "name": "web",
                                                    "bandwidth_limit_mbps": 50}},
                  {"op": "route.add", "body": {"source_cidr": "10.1.0.0/16", "priority": 200}})
    assert result["valid"] and result["errors"] == []
    diff = result["kernel_diff"][api.local_peer_id]
    assert "+\t\tip saddr 10.1.0.0/16 tcp flags syn / fin,syn,rst,ack tproxy ip to :61080" in diff
    assert "+shape svc_" in diff and "50 Mbit/s" in diff  # shaping is part of the plan
    assert state(api) == before
    assert [s["id"] for s in api.get("/v1/services").get_json()] == [service["id"]]


def test_route_update_and_delete_are_planned_against_the_existing_service(api, service):
    sid = service["id"]
    moved = plan(api, {"op": "route.update", "service_id": sid, "route_id": 1,
                       "body": {"dest_cidr": "192.168.200.0/24"}})["kernel_diff"][api.local_peer_id]
    assert "-\t\tip daddr 192.168.100.0/24" in moved
    assert "+\t\tip daddr 192.168.200.0/24" in moved
    deleted = plan(api, {"op": "service.delete", "service_id": sid})["kernel_diff"][api.local_peer_id]
    assert "-table inet arctic {" in deleted


@pytest.mark.parametrize("change, code", [
    ({"op": "service.create", "body": {}}, "MISSING_FIELD"),
    ({"op": "service.create", "body": {"target_peer_id": "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ"}}, "NOT_FOUND"),
    ({"op": "service.update", "service_id": "SVC", "body": {"transport_type": "udp"}}, "INVALID_TRANSPORT"),
    ({"op": "service.update", "service_id": "SVC", "body": {"fully_transparent": True}}, "INVALID_REQUEST"),
    ({"op": "route.add", "service_id": "SVC", "body": {"dest_cidr": "10.1.2.3/8", "priority": 1}}, "INVALID_CIDR"),
    ({"op": "route.add", "service_id": "SVC", "body": {"priority": 1}}, "MISSING_FIELD"),
    ({"op": "route.add", "service_id": "SVC", "body": {"dest_cidr": "192.168.100.0/24", "priority": 1}},
     "ALREADY_EXISTS"),
    ({"op": "route.add", "body": {"dest_cidr": "192.168.7.0/24", "priority": 1}}, "MISSING_FIELD"),
    ({"op": "route.update", "service_id": "SVC", "route_id": 9, "body": {"priority": 1}}, "NOT_FOUND"),
    ({"op": "route.delete", "service_id": "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ", "route_id": 1}, "NOT_FOUND"),
])
def test_bodies_are_refused_with_the_codes_of_the_real_endpoints(api, service, change, code):
    if change.get("service_id") == "SVC":
        change = dict(change, service_id=service["id"])
    before = state(api)
    result = plan(api, change)
    assert result["valid"] is False and result["kernel_diff"] == {}
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(0, code)], result["errors"]
    assert state(api) == before


def test_every_refused_change_is_listed_not_only_the_first(api, service):
    result = plan(api, {"op": "route.delete", "service_id": service["id"], "route_id": 7},
                  {"op": "service.update", "service_id": service["id"], "body": {"bandwidth_limit_mbps": 10}},
                  {"op": "service.update", "service_id": service["id"], "body": {"bandwidth_limit_mbps": -1}})
    assert [e["index"] for e in result["errors"]] == [0, 2]


def test_a_malformed_request_is_a_400(api):
    for body in ({}, {"changes": "x"}, {"changes": [{"op": "service.rename"}]}):
        resp = api.post("/v1/plan", json=body)
        assert resp.status_code == 400 and resp.get_json()["code"] in ("MISSING_FIELD", "INVALID_REQUEST")
