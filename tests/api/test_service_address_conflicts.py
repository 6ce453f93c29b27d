"""Issue 14, item 3: a desired interface address already desired by another service of the same target peer is
refused (409 ``ALREADY_EXISTS`` naming the holder and the field) by the writes and by the dry run alike, and a
refusal changes nothing. Last, a conflict the target finds on the LAN (``tests/lab/test_netconf_interfaces.py``)
reaches readiness and the reconcile report."""

from __future__ import annotations

import sqlite3
import time

import pytest
from agentkit import NoShaping, insert_inbound_interface_service
from arctic.daemon.reconcile import ReconcileWorker
from arctic.ids import new_id
from arctic.netconf.interfaces import InterfaceStatus
from arctic.netconf.reconciler import Plan
from arctic.store import repository as repo

V4 = ("desired_ipv4_cidr", "192.168.100.10/24", "192.168.100.10/25", "192.168.100.11/24", "192.168.100.10")
V6 = ("desired_ipv6_cidr", "fd00:100::10/64", "fd00:100::10/80", "fd00:100::11/64", "fd00:100::10")


def services(api) -> list[dict]:
    listed = api.get("/v1/services").get_json()
    return sorted(listed, key=lambda s: s["id"])


def interface_service(api, target: str, **body) -> dict:
    resp = api.post("/v1/services", json={"target_peer_id": target, "requires_interface": True, **body})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def stored_service(api, *, source: str, target: str, name: str | None = None, **addresses: str) -> str:
    """A service as replication stores it (authored by another peer), written straight into the store."""
    sid = new_id("svc")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with sqlite3.connect(api.data_dir / "arctic.db", timeout=10) as conn:
        conn.execute("INSERT INTO services (id, name, source_peer_id, target_peer_id, transport_type,"
                     " requires_interface, desired_ipv4_cidr, desired_ipv6_cidr, fully_transparent,"
                     " bandwidth_limit_mbps, created_at, updated_at) VALUES (?, ?, ?, ?, 'tcp', 1, ?, ?, 0, 0, ?, ?)",
                     (sid, name, source, target, addresses.get("desired_ipv4_cidr"),
                      addresses.get("desired_ipv6_cidr"), now, now))
    return sid


def expected_refusal(key: str, host: str, holder: str, peer_name: str = "agent-b") -> str:
    return (f"{key}: {host} is already the address of service {holder} on peer {peer_name}; choose another "
            "address or update that service")


@pytest.mark.parametrize("key, held, asked, _other, host", [V4, V6])
def test_creating_a_service_with_an_address_already_desired_on_its_target_is_a_409_naming_the_holder(
        api, peer_b, key, held, asked, _other, host):
    holder = interface_service(api, peer_b, name="web", **{key: held})
    before = services(api)
    resp = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True, key: asked})
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json() == {"code": "ALREADY_EXISTS",
                               "error": expected_refusal(key, host, f"{holder['id']} (web)")}
    assert services(api) == before


@pytest.mark.parametrize("key, held, asked, other, host", [V4, V6])
def test_updating_a_service_to_an_address_another_service_desires_is_a_409_and_changes_nothing(
        api, peer_b, key, held, asked, other, host):
    holder = interface_service(api, peer_b, **{key: held})
    mover = interface_service(api, peer_b, name="mover", **{key: other})
    before = services(api)
    resp = api.put(f"/v1/services/{mover['id']}", json={key: asked, "bandwidth_limit_mbps": 10})
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json() == {"code": "ALREADY_EXISTS", "error": expected_refusal(key, host, holder["id"])}
    assert services(api) == before


def test_the_same_address_on_different_target_peers_is_no_conflict(api, peer_b):
    peer_c = api.add_peer("agent-c")
    interface_service(api, peer_b, desired_ipv4_cidr="192.168.100.10/24", desired_ipv6_cidr="fd00:100::10/64")
    interface_service(api, peer_c, desired_ipv4_cidr="192.168.100.10/24", desired_ipv6_cidr="fd00:100::10/64")
    assert len(services(api)) == 2


def test_a_service_may_update_to_its_own_address_whatever_the_prefix_length(api, peer_b):
    svc = interface_service(api, peer_b, desired_ipv4_cidr="192.168.100.10/24")
    for body in ({"desired_ipv4_cidr": "192.168.100.10/24"}, {"desired_ipv4_cidr": "192.168.100.10/25"},
                 {"desired_ipv4_cidr": "192.168.100.10/25", "desired_ipv6_cidr": "fd00:100::10/64"}):
        resp = api.put(f"/v1/services/{svc['id']}", json=body)
        assert resp.status_code == 200, resp.get_json()
    assert api.get(f"/v1/services/{svc['id']}").get_json()["desired_ipv4_cidr"] == "192.168.100.10/25"


def test_an_address_is_free_again_once_its_holder_moved_away(api, peer_b):
    holder = interface_service(api, peer_b, desired_ipv4_cidr="192.168.100.10/24")
    assert api.put(f"/v1/services/{holder['id']}", json={"desired_ipv4_cidr": "192.168.100.20/24"}).status_code == 200
    interface_service(api, peer_b, desired_ipv4_cidr="192.168.100.10/24")


def test_a_holder_authored_by_another_peer_and_replicated_here_is_seen(api, peer_b):
    """The check runs where the write happens, against the replicated store: every service of the cluster."""
    holder = stored_service(api, source=api.add_peer("agent-c"), target=peer_b, desired_ipv4_cidr="192.168.100.10/24")
    resp = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True,
                                          "desired_ipv4_cidr": "192.168.100.10/24"})
    assert resp.status_code == 409
    assert resp.get_json()["error"] == expected_refusal("desired_ipv4_cidr", "192.168.100.10", holder)


def test_a_clash_stored_before_the_rule_does_not_block_unrelated_updates_but_no_new_one_is_made(api, peer_b):
    first = stored_service(api, source=api.local_peer_id, target=peer_b, desired_ipv4_cidr="192.168.100.10/24")
    second = stored_service(api, source=api.local_peer_id, target=peer_b, desired_ipv4_cidr="192.168.100.10/24")
    assert api.put(f"/v1/services/{second}", json={"name": "renamed"}).status_code == 200
    moved = api.put(f"/v1/services/{second}", json={"desired_ipv4_cidr": "192.168.100.20/24"})
    assert moved.status_code == 200
    back = api.put(f"/v1/services/{second}", json={"desired_ipv4_cidr": "192.168.100.10/24"})
    assert back.status_code == 409 and first in back.get_json()["error"]


# --- the dry run shows the same refusal ----------------------------------------------------------------------------

def plan(api, *changes) -> dict:
    resp = api.post("/v1/plan", json={"changes": list(changes)})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


@pytest.mark.parametrize("key, held, asked, other, host", [V4, V6])
def test_a_planned_create_or_update_onto_a_desired_address_shows_the_writes_refusal(
        api, peer_b, key, held, asked, other, host):
    interface_service(api, peer_b, name="web", **{key: held})
    mover = interface_service(api, peer_b, **{key: other})
    create = {"target_peer_id": peer_b, "requires_interface": True, key: asked}
    before = services(api)
    result = plan(api, {"op": "service.create", "body": create},
                  {"op": "service.update", "service_id": mover["id"], "body": {key: asked}})
    assert result["valid"] is False and result["kernel_diff"] == {}
    real = [api.post("/v1/services", json=create).get_json(),
            api.put(f"/v1/services/{mover['id']}", json={key: asked}).get_json()]
    assert [(e["index"], e["code"], e["error"]) for e in result["errors"]] == [
        (0, "ALREADY_EXISTS", real[0]["error"]), (1, "ALREADY_EXISTS", real[1]["error"])]
    assert services(api) == before


def test_two_planned_creates_of_one_address_on_one_target_refuse_the_second(api, peer_b):
    body = {"target_peer_id": peer_b, "requires_interface": True, "desired_ipv4_cidr": "192.168.100.10/24"}
    result = plan(api, {"op": "service.create", "body": body}, {"op": "service.create", "body": body})
    assert [(e["index"], e["code"]) for e in result["errors"]] == [(1, "ALREADY_EXISTS")]
    assert "desired_ipv4_cidr: 192.168.100.10 is already the address of service svc_" in result["errors"][0]["error"]
    assert services(api) == []


# --- a conflict found on the wire reaches readiness and the last run's report (GET /v1/plan) ----------------------

SVC = "svc_01JADDRESSCONFLICT0000000"
CONFLICT = (f"service {SVC}: address conflict on arc0123456789 (parent 'eth0'): desired_ipv4_cidr 192.168.100.10/24"
            " is already used on the LAN by the host with MAC 0a:0b:0c:0d:0e:0f (it answered an ARP probe). Not"
            " assigned; free the address there or give the service another one; it is probed again on every"
            " reconcile run")


class ConflictingReconciler:
    """Reports what ``netconf.Reconciler.apply`` reports for a conflict (the lab test shows it does, for real)."""

    last_plan = None

    def apply(self, desired) -> Plan:
        status = InterfaceStatus(SVC, "arc0123456789", "eth0", "02:00:00:00:00:01", None, None, "error", False,
                                 error=CONFLICT)
        return Plan("", "", "", "", "", {}, errors={SVC: CONFLICT}, interface_status=[status])


def test_a_conflict_found_on_the_lan_makes_the_agent_unready_and_is_in_the_last_runs_report(api, peer_b):
    insert_inbound_interface_service(api.runtime, SVC, peer_b, desired_ipv4_cidr="192.168.100.10/24")
    worker = ReconcileWorker(api.runtime, reconciler=ConflictingReconciler(), qos=NoShaping(), tc=None)
    api.runtime.add_readiness(worker.readiness)
    report = worker.run_once("test")
    assert report.to_dict()["errors"] == [f"interface of {SVC}: {CONFLICT}"]  # GET /v1/plan: last_reconcile
    ready = api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["reconcile"].startswith(f"error: interface of {SVC}: {CONFLICT[:150]}")
    svc = repo.get_service(api.runtime.db.read(), SVC)
    assert svc.interface_ipv4_cidr is None  # the service's facts show no address
