"""Services API: the seed's create/update/delete examples and every validation path."""

from __future__ import annotations

import pytest


def _count(api) -> int:
    return len(api.get("/v1/services").get_json())


def test_seed_basic_create_defaults_to_local_source_and_tcp(api, peer_b):
    resp = api.post("/v1/services", json={"target_peer_id": peer_b})
    assert resp.status_code == 201
    svc = resp.get_json()
    assert svc["id"].startswith("svc_")
    assert svc["source_peer_id"] == api.local_peer_id
    assert svc["target_peer_id"] == peer_b
    assert svc["transport_type"] == "tcp"
    assert svc["requires_interface"] is False and svc["fully_transparent"] is False
    assert svc["bandwidth_limit_mbps"] == 0
    assert svc["routes"] == []


def test_seed_complete_example_is_stored_as_given(api, peer_b):
    body = {"target_peer_id": peer_b, "transport_type": "tcp", "requires_interface": True,
            "desired_ipv4_cidr": "192.168.100.10/24", "bandwidth_limit_mbps": 1000}
    svc = api.post("/v1/services", json=body).get_json()
    got = api.get(f"/v1/services/{svc['id']}").get_json()
    for key, value in body.items():
        assert got[key] == value


@pytest.mark.parametrize("body", [
    {"transport_type": "kcp"},
    {"requires_interface": True},
    {"fully_transparent": True, "requires_interface": True},
    {"requires_interface": True, "desired_ipv6_cidr": "fd00::10/64"},
    {"bandwidth_limit_mbps": 0},
])
def test_seed_option_variants_are_accepted(api, peer_b, body):
    assert api.post("/v1/services", json={"target_peer_id": peer_b, **body}).status_code == 201


def test_service_of_another_source_peer_is_forwarded_and_fails_clearly_when_it_is_down(api, peer_b):
    """Only a service's source peer may author it; the fake peer listens nowhere (127.0.0.1:9)."""
    peer_c = api.add_peer("agent-c")
    resp = api.post("/v1/services", json={"source_peer_id": peer_c, "target_peer_id": peer_b})
    assert resp.status_code == 422 and resp.get_json()["code"] == "PEER_UNREACHABLE"
    assert "127.0.0.1:9" in resp.get_json()["error"]
    assert api.get("/v1/services").get_json() == []


def test_bare_ulid_peer_ids_are_accepted(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b.removeprefix("peer_")}).get_json()
    assert svc["target_peer_id"] == peer_b


@pytest.mark.parametrize("body, status, code, words", [
    ({}, 400, "MISSING_FIELD", "target_peer_id is required"),
    ({"target_peer_id": "{b}", "transport_type": "udp"}, 400, "INVALID_TRANSPORT", "Transport must be tcp or kcp"),
    ({"target_peer_id": "{b}", "fully_transparent": True}, 400, "INVALID_REQUEST", "requires_interface"),
    ({"target_peer_id": "{b}", "requires_interface": True, "desired_ipv4_cidr": "192.168.100.0/33"},
     400, "INVALID_CIDR", "desired_ipv4_cidr"),
    ({"target_peer_id": "{b}", "requires_interface": True, "desired_ipv4_cidr": "fd00::1/64"},
     400, "INVALID_CIDR", "not an IPv4"),
    ({"target_peer_id": "{b}", "requires_interface": True, "desired_ipv4_cidr": "192.168.100.10"},
     400, "INVALID_CIDR", "prefix length"),
    ({"target_peer_id": "{b}", "requires_interface": True, "desired_ipv4_cidr": "192.168.100.0/24"},
     400, "INVALID_CIDR", "network or broadcast"),
    ({"target_peer_id": "{b}", "desired_ipv4_cidr": "192.168.100.10/24"}, 400, "INVALID_REQUEST",
     "needs requires_interface"),
    ({"target_peer_id": "{b}", "bandwidth_limit_mbps": -1}, 400, "INVALID_REQUEST", ">= 0"),
    ({"target_peer_id": "{b}", "bandwidth_limit_mbps": 10.5}, 400, "INVALID_REQUEST", "integer"),
    ({"target_peer_id": "{b}", "bandwidth_limit_mbps": "100"}, 400, "INVALID_REQUEST", "integer"),
    ({"target_peer_id": "{b}", "bandwidth_limit_mbps": True}, 400, "INVALID_REQUEST", "integer"),
    ({"target_peer_id": "{b}", "requires_interface": "yes"}, 400, "INVALID_REQUEST", "true or false"),
    ({"target_peer_id": "{b}", "bogus": 1}, 400, "INVALID_REQUEST", "unknown field 'bogus'"),
    ({"target_peer_id": "{local}"}, 400, "INVALID_REQUEST", "must differ"),
    ({"target_peer_id": "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ"}, 404, "NOT_FOUND", "target peer"),
    ({"target_peer_id": "not-an-id"}, 404, "NOT_FOUND", "target peer"),
    ({"target_peer_id": "{b}", "source_peer_id": "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ"}, 404, "NOT_FOUND", "source peer"),
    ({"target_peer_id": "{b}", "name": "bad name!"}, 400, "INVALID_REQUEST", "name must be"),
])
def test_invalid_service_is_refused_with_its_code_and_changes_nothing(api, peer_b, body, status, code, words):
    body = {k: (v.format(b=peer_b, local=api.local_peer_id) if isinstance(v, str) else v) for k, v in body.items()}
    before = _count(api)
    resp = api.post("/v1/services", json=body)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["code"] == code
    assert words in resp.get_json()["error"]
    assert _count(api) == before


def test_non_object_body_is_invalid_request(api):
    resp = api.post("/v1/services", data="[1,2]", content_type="application/json")
    assert resp.status_code == 400 and resp.get_json()["code"] == "INVALID_REQUEST"


def test_service_names_are_unique(api, peer_b):
    assert api.post("/v1/services", json={"target_peer_id": peer_b, "name": "a-to-b"}).status_code == 201
    resp = api.post("/v1/services", json={"target_peer_id": peer_b, "name": "a-to-b"})
    assert resp.status_code == 409 and resp.get_json()["code"] == "ALREADY_EXISTS"


def test_licence_service_limit_is_enforced(fresh_api):
    fresh_api.bootstrap(max_services=2)
    peer_b = fresh_api.add_peer("agent-b")
    for _ in range(2):
        assert fresh_api.post("/v1/services", json={"target_peer_id": peer_b}).status_code == 201
    resp = fresh_api.post("/v1/services", json={"target_peer_id": peer_b})
    assert resp.status_code == 422 and resp.get_json()["code"] == "SERVICE_LIMIT_EXCEEDED"
    assert len(fresh_api.get("/v1/services").get_json()) == 2


def test_list_filters_by_source_target_and_interface(api, peer_b):
    peer_c = api.add_peer("agent-c")
    s1 = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()
    s2 = api.post("/v1/services", json={"target_peer_id": peer_c}).get_json()
    ids = lambda q: {s["id"] for s in api.get(f"/v1/services{q}").get_json()}  # noqa: E731
    assert ids("") == {s1["id"], s2["id"]}
    assert ids(f"?target_peer_id={peer_c}") == {s2["id"]}
    assert ids(f"?source_peer_id={api.local_peer_id}") == {s1["id"], s2["id"]}
    assert ids(f"?source_peer_id={peer_b}") == set()
    assert ids("?requires_interface=true") == {s1["id"]}
    assert ids("?requires_interface=false") == {s2["id"]}
    listed = api.get("/v1/services").get_json()[0]
    assert "route_count" in listed and "routes" not in listed
    bad = api.get("/v1/services?requires_interface=maybe")
    assert bad.status_code == 400 and bad.get_json()["code"] == "INVALID_REQUEST"


def test_update_bandwidth_as_in_the_seed_and_back_to_unlimited(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "bandwidth_limit_mbps": 1000}).get_json()
    assert api.put(f"/v1/services/{svc['id']}", json={"bandwidth_limit_mbps": 500}).get_json()[
        "bandwidth_limit_mbps"] == 500
    assert api.put(f"/v1/services/{svc['id']}", json={"bandwidth_limit_mbps": 0}).get_json()[
        "bandwidth_limit_mbps"] == 0
    assert api.get(f"/v1/services/{svc['id']}").get_json()["bandwidth_limit_mbps"] == 0


@pytest.mark.parametrize("body, code", [
    ({"target_peer_id": "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ"}, "INVALID_REQUEST"),
    ({"fully_transparent": True}, "INVALID_REQUEST"),
    ({"transport_type": "sctp"}, "INVALID_TRANSPORT"),
    ({"bandwidth_limit_mbps": -5}, "INVALID_REQUEST"),
])
def test_invalid_update_is_refused_and_changes_nothing(api, peer_b, body, code):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()
    resp = api.put(f"/v1/services/{svc['id']}", json=body)
    assert resp.status_code == 400 and resp.get_json()["code"] == code
    after = api.get(f"/v1/services/{svc['id']}").get_json()
    assert after == svc


def test_delete_removes_service_and_its_routes(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()
    api.post(f"/v1/services/{svc['id']}/routes", json={"routes": [{"dest_cidr": "192.168.100.0/24",
                                                                   "priority": 100}]})
    assert api.delete(f"/v1/services/{svc['id']}").get_json() == {"deleted": True, "id": svc["id"]}
    assert api.get(f"/v1/services/{svc['id']}").status_code == 404
    row = api.runtime.db.read().execute("SELECT count(*) FROM routes").fetchone()[0]
    assert row == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_unknown_service_is_404_with_a_hint(api, method):
    resp = api.call(method, "/v1/services/svc_01HZZZZZZZZZZZZZZZZZZZZZZZ", json={"bandwidth_limit_mbps": 1})
    assert resp.status_code == 404
    assert resp.get_json()["code"] == "NOT_FOUND" and "arctic services list" in resp.get_json()["error"]


def test_interface_facts_of_a_service_are_asked_of_its_target_and_shown_from_its_answer(api, peer_b, monkeypatch):
    from arctic.api import observations

    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()
    facts = {"interface_name": "arc-1", "interface_mac": "02:00:00:00:00:01",
             "interface_ipv4_cidr": "192.168.100.55/24", "interface_ipv6_cidr": None}
    asked = []

    class Answer:
        status_code = 200

        @staticmethod
        def json():
            return [{"id": svc["id"], **facts}]

    def fake_raw(address, method, path, *, headers, data, params, timeout):
        asked.append((address, method, path, params, headers.get("Authorization") is not None))
        return Answer()

    monkeypatch.setattr(observations.transport, "raw", fake_raw)
    got = api.get(f"/v1/services/{svc['id']}").get_json()
    listed = api.get("/v1/services").get_json()[0]
    assert {k: got[k] for k in facts} == {k: listed[k] for k in facts} == facts
    assert asked[0] == ("127.0.0.1:9", "GET", "/v1/services",
                        {"target_peer_id": peer_b, "requires_interface": "true"}, True)


def test_an_unreachable_target_leaves_the_interface_facts_empty_and_the_answer_200(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()
    resp = api.get(f"/v1/services/{svc['id']}")  # peer_b's address 127.0.0.1:9 refuses connections
    assert resp.status_code == 200 and resp.get_json()["interface_mac"] is None


def test_a_kcp_service_is_a_service_like_any_other_transparent_mode_included(api, peer_b):
    """KCP carries the same TCP connections (transport between the peers only), so nothing warns or refuses."""
    kcp = api.post("/v1/services", json={"target_peer_id": peer_b, "transport_type": "kcp"})
    assert kcp.status_code == 201 and "Warning" not in kcp.headers
    updated = api.put(f"/v1/services/{kcp.get_json()['id']}", json={"bandwidth_limit_mbps": 10})
    assert updated.status_code == 200 and "Warning" not in updated.headers
    transparent = api.post("/v1/services", json={"target_peer_id": peer_b, "transport_type": "kcp",
                                                  "fully_transparent": True, "requires_interface": True})
    assert transparent.status_code == 201, transparent.get_json()
