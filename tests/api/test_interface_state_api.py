"""``interface_state`` / ``interface_detail``: where a service interface stands and why, from its target peer.

The target judges from its reconcile worker's last run (kernel parts faked here; the lab tests run them for real);
any other agent copies the target's answer, or says why the target could not be asked.
"""

from __future__ import annotations

import pytest
from agentkit import NoShaping, insert_inbound_interface_service
from arctic.api import observations
from arctic.daemon import reconcile
from arctic.daemon.reconcile import ReconcileWorker
from arctic.netconf.interfaces import InterfaceStatus
from arctic.netconf.reconciler import Plan

SVC = "svc_01JNTERFACESTATE0000000000"
NAME = "arc5c9c39c375"


def status(**over) -> InterfaceStatus:
    base = {"service_id": SVC, "name": NAME, "parent": "eth-net100", "mac": "02:00:00:00:00:01",
            "ipv4_cidr": "192.168.100.10/24", "ipv6_cidr": None, "state": "up", "dhcp": False,
            "dhcp_running": False, "error": None}
    return InterfaceStatus(**(base | over))


class FakeReconciler:
    """Applies by reporting whatever interface status the test set."""

    def __init__(self) -> None:
        self.statuses: list[InterfaceStatus] = []
        self.last_plan = None

    def apply(self, desired) -> Plan:
        self.last_plan = Plan("", "", "", "", "", {}, interface_status=list(self.statuses))
        return self.last_plan


@pytest.fixture
def target_service(api, peer_b) -> str:
    """SVC runs from agent-b to this agent (the target), with an interface."""
    insert_inbound_interface_service(api.runtime, SVC, peer_b)
    return SVC


@pytest.fixture
def worker(api, target_service, monkeypatch) -> ReconcileWorker:
    worker = ReconcileWorker(api.runtime, reconciler=FakeReconciler(), qos=NoShaping(), tc=None)
    monkeypatch.setattr(api.runtime, "reconcile_worker", worker)
    return worker


@pytest.fixture
def timers(monkeypatch) -> list[float]:
    """The delays of the re-checks the worker schedules (recorded, never started)."""
    delays: list[float] = []

    class RecordedTimer:
        def __init__(self, interval, function, args=()) -> None:
            delays.append(interval)
            self.daemon = False

        def start(self) -> None:
            pass

    monkeypatch.setattr(reconcile.threading, "Timer", RecordedTimer)
    return delays


def shown(api) -> tuple:
    svc = api.get(f"/v1/services/{SVC}").get_json()
    return svc["interface_state"], svc["interface_detail"]


def test_a_target_that_manages_no_kernel_says_it_creates_no_interfaces(api, target_service):
    assert shown(api) == ("unmanaged", "the target peer does not manage its kernel (apply_kernel: false), so it"
                                       " creates no service interfaces")


def test_before_its_first_reconcile_run_the_interface_is_pending(api, worker):
    assert shown(api) == ("pending", "the target peer has not reconciled the service yet")


@pytest.mark.parametrize("observed, expected", [
    (status(), ("up", None)),
    (status(dhcp=True, dhcp_running=True, ipv4_cidr=None),
     ("waiting_for_lease", f"the DHCP client on {NAME} has no lease yet: no DHCP server on the network of eth-net100"
                           " has answered so far")),
    (status(dhcp=True, dhcp_running=False, ipv4_cidr=None),
     ("waiting_for_lease", f"no DHCP client runs on {NAME} yet; the target peer starts one at its next reconcile run")),
    (status(state="down"), ("down", f"{NAME} exists on the target peer but is down")),
    (status(state="error", mac=None, ipv4_cidr=None, error=f"service {SVC}: parent interface 'eth9' does not exist"),
     ("error", f"service {SVC}: parent interface 'eth9' does not exist")),
])
def test_the_target_reports_what_its_last_run_observed_and_why_it_is_not_usable(api, worker, timers, observed,
                                                                                  expected):
    worker.reconciler.statuses = [observed]
    worker.run_once("test")
    assert shown(api) == expected


def test_a_service_without_an_interface_has_no_interface_state(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()
    assert (svc["interface_state"], svc["interface_detail"]) == (None, None)
    got = api.get(f"/v1/services/{svc['id']}").get_json()
    assert (got["interface_state"], got["interface_detail"]) == (None, None)


def test_another_agent_shows_the_state_its_target_reported(api, peer_b, monkeypatch):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()
    facts = {"interface_name": NAME, "interface_mac": "02:00:00:00:00:01", "interface_ipv4_cidr": None,
             "interface_ipv6_cidr": None, "interface_state": "waiting_for_lease", "interface_detail": "no lease yet"}

    class Answer:
        status_code = 200

        @staticmethod
        def json():
            return [{"id": svc["id"], **facts}]

    monkeypatch.setattr(observations.transport, "raw", lambda *a, **kw: Answer())
    got = api.get(f"/v1/services/{svc['id']}").get_json()
    assert {k: got[k] for k in facts} == facts


def test_a_target_that_has_not_received_the_service_yet_is_pending(api, peer_b, monkeypatch):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()

    class Answer:
        status_code = 200

        @staticmethod
        def json():
            return []

    monkeypatch.setattr(observations.transport, "raw", lambda *a, **kw: Answer())
    got = api.get(f"/v1/services/{svc['id']}").get_json()
    assert (got["interface_state"], got["interface_detail"]) == (
        "pending", "the target peer has not received the service yet (replication is under way)")


def test_a_target_that_cannot_be_asked_is_unknown_and_says_why(api, peer_b):
    svc = api.post("/v1/services", json={"target_peer_id": peer_b, "requires_interface": True}).get_json()
    got = api.get(f"/v1/services/{svc['id']}").get_json()  # peer_b's address 127.0.0.1:9 refuses connections
    assert (got["interface_state"], got["interface_detail"]) == (
        "unknown", "the target peer could not be asked: cannot connect to 127.0.0.1:9")
    assert got["interface_mac"] is None


def test_while_a_lease_is_awaited_the_worker_rechecks_after_1_2_4_8_16_s_then_at_its_interval(worker, timers):
    worker.reconciler.statuses = [status(dhcp=True, dhcp_running=True, ipv4_cidr=None)]
    for _ in range(7):
        worker.run_once("test")
    assert timers == [1.0, 2.0, 4.0, 8.0, 16.0]  # reconcile_interval is 30: the periodic check takes over

    worker.reconciler.statuses = [status(dhcp=True, dhcp_running=True, ipv4_cidr="192.168.100.53/24")]
    worker.run_once("leased")
    worker.reconciler.statuses = [status(dhcp=True, dhcp_running=True, ipv4_cidr=None)]  # a new wait starts over
    worker.run_once("lease lost")
    assert timers[5:] == [1.0]


def test_a_static_interface_schedules_no_recheck(worker, timers):
    worker.reconciler.statuses = [status()]
    worker.run_once("test")
    assert timers == []
