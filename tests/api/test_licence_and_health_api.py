"""Licence states and their documented effects; health and OpenAPI endpoints."""

from __future__ import annotations

import pytest


def test_licence_show(api):
    lic = api.get("/v1/license").get_json()
    assert lic["state"] == "valid" and lic["max_services"] == 100 and lic["services_used"] == 0
    assert lic["customer_id"] == "cust_lab"


@pytest.mark.parametrize("days, state, writes", [
    (0, "valid", True), (340, "warning", True), (370, "grace", True), (385, "read_only", False),
    (500, "suspended", False),
])
def test_licence_states_follow_the_clock(api, peer_b, days, state, writes):
    api.clock.advance(days=days)
    # tokens are checked against real time, so mint them with the real clock
    assert api.get("/v1/license").get_json()["state"] == state
    resp = api.post("/v1/services", json={"target_peer_id": peer_b})
    assert (resp.status_code == 201) is writes, resp.get_json()
    if not writes:
        assert resp.get_json()["code"] == "LICENSE_EXPIRED"
    read = api.get("/v1/services")
    assert (read.status_code == 200) is (state != "suspended")


def test_licence_clock_never_moves_backwards(api, peer_b):
    api.clock.advance(days=385)
    assert api.get("/v1/license").get_json()["state"] == "read_only"
    api.clock.advance(days=-385)  # someone sets the clock back
    assert api.get("/v1/license").get_json()["state"] == "read_only"


def test_renewed_licence_lifts_read_only(api, peer_b):
    api.clock.advance(days=385)
    renewed = api.issuer.licence(issued_at=_iso(api.clock.now), valid_days=365)
    resp = api.put("/v1/license", json={"license": renewed})
    assert resp.status_code == 200 and resp.get_json()["state"] == "valid"
    assert api.post("/v1/services", json={"target_peer_id": peer_b}).status_code == 201


def test_licence_of_another_customer_is_a_mismatch(api):
    resp = api.put("/v1/license", json={"license": api.issuer.licence(customer_id="cust_other")})
    assert resp.status_code == 422 and resp.get_json()["code"] == "LICENSE_MISMATCH"
    assert api.get("/v1/license").get_json()["customer_id"] == "cust_lab"


def test_tampered_licence_update_is_invalid(api):
    lic = api.issuer.licence() | {"max_services": 5000}
    resp = api.put("/v1/license", json={"license": lic})
    assert resp.status_code == 422 and resp.get_json()["code"] == "LICENSE_INVALID"


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_livez_and_readyz_are_public(fresh_api):
    live = fresh_api.client.get("/livez")
    assert live.status_code == 200 and live.get_json()["status"] == "ok"
    ready = fresh_api.client.get("/readyz").get_json()
    assert ready["checks"]["store"] == "ok" and ready["checks"]["bootstrapped"] == "waiting for bootstrap"


def test_readyz_is_503_when_suspended(api):
    api.clock.advance(days=500)
    resp = api.client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["license"].startswith("error")


def test_unknown_endpoint_is_json_404(api):
    resp = api.client.get("/v1/nope")
    assert resp.status_code == 404 and resp.get_json()["code"] == "NOT_FOUND"


def test_openapi_document_is_generated_from_the_schemas(api):
    doc = api.client.get("/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    create = doc["paths"]["/v1/services"]["post"]
    schema_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = schema_ref.rsplit("/", 1)[-1]
    props = doc["components"]["schemas"][name]["properties"]
    assert {"target_peer_id", "transport_type", "bandwidth_limit_mbps", "desired_ipv4_cidr"} <= set(props)
    assert "target_peer_id" in doc["components"]["schemas"][name]["required"]
    assert "/v1/services/{service_id}/routes/{route_id}" in doc["paths"]
    assert doc["paths"]["/v1/services"]["get"]["security"]
