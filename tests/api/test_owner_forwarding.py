"""'Any agent answers' (``api/forwarding.py: owner_answers``): the seven handlers that change a record only its
owner may author forward the request there, after authentication, after this agent validated the body and found
the record (a 400 or a 404 is answered here, never forwarded), and only deleting a service whose source peer left
is done here instead. The owner in these tests is a peer that listens nowhere (127.0.0.1:9), so a forwarded
request is one that answers 422 ``PEER_UNREACHABLE`` naming that address."""

from __future__ import annotations

import pytest
from arctic.ids import new_id
from arctic.store import repository as repo

MISSING_SVC = "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ"
MISSING_PEER = "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ"


@pytest.fixture
def remote(api, peer_b) -> dict:
    """A service (with route 1) whose source peer is agent-c, as replication stores it here."""
    owner = api.add_peer("agent-c")
    sid = new_id("svc")
    with api.runtime.db.write() as tx:
        repo.insert_service(tx, sid, {"source_peer_id": owner, "target_peer_id": peer_b, "transport_type": "tcp",
                                      "requires_interface": False, "fully_transparent": False,
                                      "bandwidth_limit_mbps": 0}, "2026-12-01T00:00:00Z")
        repo.insert_route(tx, sid, 100, None, "10.0.0.0/8", 1, "2026-12-01T00:00:00Z")
    return {"owner": owner, "service": sid, "target": peer_b}


# handler: (method, path, a valid body, an invalid body or None, the path with an unknown record)
CASES = {
    "update_peer": ("PUT", "/v1/peers/{owner}", {"name": "c"}, {"name": 5}, f"/v1/peers/{MISSING_PEER}"),
    "create_service": ("POST", "/v1/services", {"source_peer_id": "{owner}", "target_peer_id": "{target}"},
                       {"source_peer_id": "{owner}", "target_peer_id": "{target}", "transport_type": "udp"}, None),
    "update_service": ("PUT", "/v1/services/{service}", {"bandwidth_limit_mbps": 5}, {"bandwidth_limit_mbps": -1},
                       f"/v1/services/{MISSING_SVC}"),
    "delete_service": ("DELETE", "/v1/services/{service}", None, None, f"/v1/services/{MISSING_SVC}"),
    "add_routes": ("POST", "/v1/services/{service}/routes", {"routes": [{"dest_cidr": "10.2.0.0/16", "priority": 1}]},
                   {"routes": []}, f"/v1/services/{MISSING_SVC}/routes"),
    "update_route": ("PUT", "/v1/services/{service}/routes/1", {"priority": 1}, {},
                     f"/v1/services/{MISSING_SVC}/routes/1"),
    "delete_route": ("DELETE", "/v1/services/{service}/routes/1", None, None, f"/v1/services/{MISSING_SVC}/routes/1"),
}


def filled(value, remote: dict):
    if isinstance(value, str):
        return value.format(**remote)
    if isinstance(value, dict):
        return {k: filled(v, remote) for k, v in value.items()}
    return value


def stored(api) -> list[dict]:
    return [s.to_api(with_routes=True) for s in repo.list_services(api.runtime.db.read())]


@pytest.mark.parametrize("handler", sorted(CASES))
def test_a_valid_request_about_another_peers_record_is_forwarded_to_that_peer(api, remote, handler):
    method, path, body, _bad, _missing = CASES[handler]
    before = stored(api)
    resp = api.call(method, filled(path, remote), json=filled(body, remote))
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["code"] == "PEER_UNREACHABLE"
    assert resp.get_json()["error"].startswith("this change must be made by peer agent-c (127.0.0.1:9), which is "
                                               "unreachable")
    assert stored(api) == before


@pytest.mark.parametrize("handler", sorted(h for h, case in CASES.items() if case[3] is not None))
def test_an_invalid_body_is_refused_here_without_asking_the_owner(api, remote, handler):
    method, path, _body, bad, missing = CASES[handler]
    resp = api.call(method, filled(path, remote), json=filled(bad, remote))
    assert resp.status_code == 400, resp.get_json()
    if missing is not None:  # the body is checked before the record is looked up, as before
        assert api.call(method, missing, json=filled(bad, remote)).status_code == 400


@pytest.mark.parametrize("handler", sorted(h for h, case in CASES.items() if case[4] is not None))
def test_an_unknown_record_is_a_404_from_this_agent(api, remote, handler):
    method, _path, body, _bad, missing = CASES[handler]
    resp = api.call(method, missing, json=filled(body, remote))
    assert resp.status_code == 404 and resp.get_json()["code"] == "NOT_FOUND", resp.get_json()


@pytest.mark.parametrize("handler", sorted(CASES))
def test_the_caller_is_authenticated_before_anything_is_forwarded(api, remote, handler):
    method, path, body, _bad, _missing = CASES[handler]
    resp = api.client.open(filled(path, remote), method=method, json=filled(body, remote))
    assert resp.status_code == 401 and resp.get_json()["code"] == "UNAUTHORIZED"


def test_a_service_whose_source_peer_left_is_deleted_here_and_nothing_else_is_changed_here(api, remote):
    with api.runtime.db.write() as tx:
        tx.execute("UPDATE peers SET state = 'deactivated' WHERE id = ?", (remote["owner"],))
        tx.touch("peers", remote["owner"])
    sid = remote["service"]
    for method, path, body in (("PUT", f"/v1/services/{sid}", {"bandwidth_limit_mbps": 5}),
                               ("DELETE", f"/v1/services/{sid}/routes/1", None)):
        resp = api.call(method, path, json=body)
        assert resp.status_code == 422 and resp.get_json() == {
            "code": "PEER_UNREACHABLE",
            "error": f"owner peer {remote['owner']} is not an active member of this cluster"}
    resp = api.delete(f"/v1/services/{sid}")
    assert resp.status_code == 200 and resp.get_json() == {"deleted": True, "id": sid}
    assert stored(api) == []
