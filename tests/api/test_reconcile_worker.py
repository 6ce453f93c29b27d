"""The reconcile worker's bookkeeping around one run, with the kernel parts faked (the lab tests run them for real)."""

from __future__ import annotations

import json

import pytest
from arctic.daemon.reconcile import ReconcileWorker
from arctic.netconf.errors import DesiredStateError
from arctic.netconf.interfaces import InterfaceStatus
from arctic.netconf.reconciler import Plan
from arctic.store import repository as repo

SVC = "svc_01JRECONCILEWORKER00000000"


class FakeReconciler:
    """Applies by reporting the service interface as up with an address; or refuses, as told."""

    def __init__(self) -> None:
        self.refuse = False
        self.last_plan = None

    def apply(self, desired) -> Plan:
        if self.refuse:
            raise DesiredStateError("refused on purpose")
        status = InterfaceStatus(SVC, "arc-test", "eth0", "02:00:00:00:00:01", "192.168.100.10/24", None, "up",
                                 False)
        self.last_plan = Plan("", "", "", "", "", {}, interface_status=[status])
        return self.last_plan


class FakeQos:
    def apply(self, by_dev) -> dict:
        return {}

    def priorities(self) -> dict:
        return {}


@pytest.fixture
def worker(api, peer_b) -> ReconcileWorker:
    """agent-a (this runtime) is the *target* of SVC, a service that asks for an interface."""
    with api.runtime.db.write() as tx:
        repo.insert_service(tx, SVC, {"source_peer_id": peer_b, "target_peer_id": api.local_peer_id,
                                      "transport_type": "tcp", "requires_interface": True,
                                      "fully_transparent": False, "bandwidth_limit_mbps": 0}, "2026-11-24T00:00:00Z")
    return ReconcileWorker(api.runtime, reconciler=FakeReconciler(), qos=FakeQos(), tc=None)


def recorded(worker: ReconcileWorker) -> tuple:
    svc = repo.get_service(worker.runtime.db.read(), SVC)
    config = json.loads(worker.dataplane_path.read_text())
    return svc.interface_name, svc.interface_ipv4_cidr, config["services"][0]["bind_address"]


def test_a_refused_desired_state_keeps_the_interface_facts_and_the_bind_address(worker):
    worker.run_once("first")
    assert recorded(worker) == ("arc-test", "192.168.100.10/24", "192.168.100.10")
    worker.reconciler.refuse = True
    report = worker.run_once("refused")
    assert any("refused on purpose" in e for e in report.errors)
    assert recorded(worker) == ("arc-test", "192.168.100.10/24", "192.168.100.10"), \
        "the interface still exists: its facts and the data plane's source address must not be dropped"


