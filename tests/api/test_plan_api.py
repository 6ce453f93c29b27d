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


# --- a planned change is refused with the very text the write gets (one rule each, api/rules.py) ---------------

def refusals_match(api, change: dict, method: str, path: str, body: dict | None = None) -> tuple[str, str]:
    """Plan ``change``, then make the real write: both refuse with one code and text, and nothing changes."""
    before = state(api)
    result = plan(api, change)
    assert result["valid"] is False and result["kernel_diff"] == {}
    real = api.call(method, path, json=body)
    assert real.status_code in (404, 409, 422), real.get_json()
    assert [(e["index"], e["code"], e["error"]) for e in result["errors"]] == [
        (0, real.get_json()["code"], real.get_json()["error"])]
    assert state(api) == before
    return real.get_json()["code"], real.get_json()["error"]


def test_a_planned_create_or_rename_onto_a_taken_name_gets_the_writes_refusal(api, peer_b, service):
    api.create_service(target_peer_id=peer_b, name="web")
    create = {"target_peer_id": peer_b, "name": "web"}
    assert refusals_match(api, {"op": "service.create", "body": create}, "POST", "/v1/services", create) == (
        "ALREADY_EXISTS", "a service named 'web' already exists")
    rename = {"name": "web"}
    sid = service["id"]
    assert refusals_match(api, {"op": "service.update", "service_id": sid, "body": rename},
                          "PUT", f"/v1/services/{sid}", rename)[0] == "ALREADY_EXISTS"


def test_a_planned_create_beyond_the_licence_limit_gets_the_writes_refusal(fresh_api):
    fresh_api.bootstrap(max_services=1)
    peer_b = fresh_api.add_peer("agent-b")
    fresh_api.create_service(target_peer_id=peer_b)
    create = {"target_peer_id": peer_b}
    code, error = refusals_match(fresh_api, {"op": "service.create", "body": create}, "POST", "/v1/services", create)
    assert code == "SERVICE_LIMIT_EXCEEDED" and error.startswith("licence allows 1 services and all are in use")


def test_planned_routes_onto_a_pair_the_service_has_get_the_writes_refusals(api, service):
    sid = service["id"]
    added = api.post(f"/v1/services/{sid}/routes", json={"routes": [{"source_cidr": "10.1.0.0/16", "priority": 5}]})
    assert added.get_json()["route_ids"] == [2]
    taken = {"routes": [{"dest_cidr": "192.168.100.0/24", "priority": 7}]}
    assert refusals_match(api, {"op": "route.add", "service_id": sid, "body": taken},
                          "POST", f"/v1/services/{sid}/routes", taken) == (
        "ALREADY_EXISTS", f"route 1 of {sid} already matches source any / destination 192.168.100.0/24; update it "
        "instead")
    onto = {"source_cidr": None, "dest_cidr": "192.168.100.0/24"}
    assert refusals_match(api, {"op": "route.update", "service_id": sid, "route_id": 2, "body": onto},
                          "PUT", f"/v1/services/{sid}/routes/2", onto) == (
        "ALREADY_EXISTS", f"route 1 of {sid} already has these CIDRs")


@pytest.mark.parametrize("op, method, route", [("route.update", "PUT", {"priority": 1}),
                                               ("route.delete", "DELETE", None)])
def test_a_planned_change_of_an_unknown_route_or_service_gets_the_writes_404(api, service, op, method, route):
    sid, body = service["id"], {} if route is None else {"body": route}
    code, error = refusals_match(api, {"op": op, "service_id": sid, "route_id": 9, **body},
                                 method, f"/v1/services/{sid}/routes/9", route)
    assert (code, error) == ("NOT_FOUND", f"route 9 not found in {sid} (list them with 'arctic routes list "
                                          f"--service {sid}')")
    missing = "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ"
    assert refusals_match(api, {"op": op, "service_id": missing, "route_id": 1, **body},
                          method, f"/v1/services/{missing}/routes/1", route) == (
        "NOT_FOUND", f"service not found: {missing} (list services with 'arctic services list')")
