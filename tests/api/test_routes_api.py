"""Routes API: batch add, precedence order, update, delete and validation."""

from __future__ import annotations

import pytest


@pytest.fixture
def svc(api, peer_b) -> str:
    return api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()["id"]


def _routes(api, svc):
    return api.get(f"/v1/services/{svc}/routes").get_json()


def test_seed_basic_route_add_returns_ids_and_count(api, svc):
    resp = api.post(f"/v1/services/{svc}/routes", json={"routes": [
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}]})
    assert resp.status_code == 201
    assert resp.get_json() == {"route_ids": [1], "count": 1}
    (route,) = _routes(api, svc)
    assert route | {"created_at": None} == {"id": 1, "service_id": svc, "priority": 100, "source_cidr": "10.0.0.0/8",
                                            "dest_cidr": "192.168.100.0/24", "created_at": None,
                                            "state": "active", "shadowed_by": None}


def test_destination_only_and_source_only_routes(api, svc):
    api.post(f"/v1/services/{svc}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24", "priority": 100}]})
    api.post(f"/v1/services/{svc}/routes", json={"routes": [{"source_cidr": "10.0.0.0/8", "priority": 100}]})
    got = {(r["source_cidr"], r["dest_cidr"]) for r in _routes(api, svc)}
    assert got == {(None, "192.168.100.0/24"), ("10.0.0.0/8", None)}


def test_seed_precedence_table_order(api, svc):
    """The seed's example ordering, added in the 'wrong' order, comes back most preferred first."""
    api.post(f"/v1/services/{svc}/routes", json={"routes": [
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.0.0/16", "priority": 100},
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100},
        {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 200},
    ]})
    order = [(r["priority"], r["source_cidr"], r["dest_cidr"]) for r in _routes(api, svc)]
    assert order == [(200, "10.1.0.0/16", "192.168.100.0/24"), (100, "10.0.0.0/8", "192.168.100.0/24"),
                     (100, "10.0.0.0/8", "192.168.0.0/16")]


def test_classes_then_priority_then_age(api, svc):
    api.post(f"/v1/services/{svc}/routes", json={"routes": [
        {"dest_cidr": "192.168.100.0/24", "priority": 500},
        {"source_cidr": "10.0.0.0/8", "priority": 1},
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "0.0.0.0/0", "priority": 1},
        {"dest_cidr": "192.168.200.0/24", "priority": 900},
    ]})
    order = [(r["source_cidr"], r["dest_cidr"]) for r in _routes(api, svc)]
    assert order == [("10.0.0.0/8", "0.0.0.0/0"), ("10.0.0.0/8", None), (None, "192.168.200.0/24"),
                     (None, "192.168.100.0/24")]


def test_update_priority_and_cidrs_as_in_the_seed(api, svc):
    api.post(f"/v1/services/{svc}/routes", json={"routes": [
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}]})
    resp = api.put(f"/v1/services/{svc}/routes/1", json={"priority": 200})
    assert resp.status_code == 200 and resp.get_json()["priority"] == 200
    resp = api.put(f"/v1/services/{svc}/routes/1", json={"source_cidr": "10.1.0.0/16",
                                                         "dest_cidr": "192.168.200.0/24"})
    assert (resp.get_json()["source_cidr"], resp.get_json()["dest_cidr"]) == ("10.1.0.0/16", "192.168.200.0/24")
    assert resp.get_json()["priority"] == 200


def test_delete_route_and_ids_are_never_reused(api, svc):
    api.post(f"/v1/services/{svc}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24", "priority": 100}]})
    assert api.delete(f"/v1/services/{svc}/routes/1").status_code == 200
    assert _routes(api, svc) == []
    again = api.post(f"/v1/services/{svc}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24",
                                                                     "priority": 100}]})
    assert again.get_json()["route_ids"] == [2]
    assert api.delete(f"/v1/services/{svc}/routes/1").status_code == 404


def test_a_route_whose_match_an_earlier_route_of_another_service_takes_is_listed_as_shadowed(api, peer_b):
    """Same source peer, same match: the kernel keeps the first in precedence order, the other carries nothing."""
    first, second = (api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()["id"] for _ in range(2))
    pair = {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24"}
    api.post(f"/v1/services/{second}/routes", json={"routes": [{**pair, "priority": 100},
                                                              {"dest_cidr": "192.168.200.0/24", "priority": 1}]})
    api.post(f"/v1/services/{first}/routes", json={"routes": [{**pair, "priority": 200}]})  # newer, but higher
    assert [(r["state"], r["shadowed_by"]) for r in _routes(api, first)] == [("active", None)]
    shadowed, other = _routes(api, second)
    assert (shadowed["state"], shadowed["shadowed_by"]) == ("shadowed", {"service_id": first, "route_id": 1})
    assert (other["state"], other["shadowed_by"]) == ("active", None)

    api.delete(f"/v1/services/{first}/routes/1")  # the winner goes: the shadowed route takes over
    assert [r["state"] for r in _routes(api, second)] == ["active", "active"]


@pytest.mark.parametrize("body, code, words", [
    ({}, "INVALID_REQUEST", '"routes" array'),
    ({"routes": []}, "INVALID_REQUEST", '"routes" array'),
    ({"routes": "x"}, "INVALID_REQUEST", '"routes" array'),
    ({"routes": [{"dest_cidr": "10.1.2.3/8", "priority": 1}]}, "INVALID_CIDR", "use 10.0.0.0/8"),
    ({"routes": [{"dest_cidr": "10.0.0.0", "priority": 1}]}, "INVALID_CIDR", "such as 10.0.0.0/8, or 10.0.0.0/32"),
    ({"routes": [{"dest_cidr": "banana/8", "priority": 1}]}, "INVALID_CIDR", "not valid CIDR"),
    ({"routes": [{"dest_cidr": "10.0.0.0/8"}]}, "MISSING_FIELD", "priority is required"),
    ({"routes": [{"dest_cidr": "10.0.0.0/8", "priority": "100"}]}, "INVALID_REQUEST", "integer"),
    ({"routes": [{"dest_cidr": "10.0.0.0/8", "priority": 1.5}]}, "INVALID_REQUEST", "integer"),
    ({"routes": [{"priority": 100}]}, "MISSING_FIELD", "source_cidr or dest_cidr"),
    ({"routes": [{"source_cidr": "10.0.0.0/8", "dest_cidr": "fd00::/8", "priority": 1}]}, "INVALID_CIDR",
     "address families"),
    ({"routes": [{"dest_cidr": "10.0.0.0/8", "priority": 1, "via": "x"}]}, "INVALID_REQUEST", "unknown field"),
    ({"routes": [{"dest_cidr": "10.0.0.0/8", "priority": 1}, {"dest_cidr": "10.0.0.0/8", "priority": 2}]},
     "INVALID_REQUEST", "repeats"),
])
def test_invalid_batch_is_refused_whole(api, svc, body, code, words):
    resp = api.post(f"/v1/services/{svc}/routes", json={**body} if body else {})
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["code"] == code and words in resp.get_json()["error"]
    assert _routes(api, svc) == []


def test_a_bad_route_in_a_batch_adds_none_of_them(api, svc):
    resp = api.post(f"/v1/services/{svc}/routes", json={"routes": [
        {"dest_cidr": "192.168.100.0/24", "priority": 100}, {"dest_cidr": "192.168.1.7/24", "priority": 100}]})
    assert resp.status_code == 400 and "routes.1" in resp.get_json()["error"]
    assert _routes(api, svc) == []


def test_duplicate_route_is_already_exists(api, svc):
    body = {"routes": [{"dest_cidr": "192.168.100.0/24", "priority": 100}]}
    api.post(f"/v1/services/{svc}/routes", json=body)
    resp = api.post(f"/v1/services/{svc}/routes", json=body)
    assert resp.status_code == 409 and resp.get_json()["code"] == "ALREADY_EXISTS"
    assert len(_routes(api, svc)) == 1


@pytest.mark.parametrize("body, code", [
    ({"priority": "high"}, "INVALID_REQUEST"),
    ({"source_cidr": "10.1.2.3/8"}, "INVALID_CIDR"),
    ({"dest_cidr": None}, "MISSING_FIELD"),
    ({}, "INVALID_REQUEST"),
])
def test_invalid_route_update_changes_nothing(api, svc, body, code):
    api.post(f"/v1/services/{svc}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24", "priority": 100}]})
    before = _routes(api, svc)
    resp = api.put(f"/v1/services/{svc}/routes/1", json=body)
    assert resp.status_code == 400 and resp.get_json()["code"] == code
    assert _routes(api, svc) == before


def test_routes_of_unknown_service_or_route_are_404(api, svc):
    missing = "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ"
    assert api.get(f"/v1/services/{missing}/routes").status_code == 404
    resp = api.post(f"/v1/services/{missing}/routes", json={"routes": [{"dest_cidr": "10.0.0.0/8", "priority": 1}]})
    assert resp.status_code == 404 and resp.get_json()["code"] == "NOT_FOUND"
    assert api.put(f"/v1/services/{svc}/routes/99", json={"priority": 1}).status_code == 404
