"""The reconcile worker's bookkeeping around one run, with the kernel parts faked (the lab tests run them for real)."""

from __future__ import annotations

import dataclasses
import json
import queue
import time

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




# --- the loop itself ---------------------------------------------------------------------------------------------

class RecordingWorker(ReconcileWorker):
    """The real loop around a run that only records why it ran (and fails when told to)."""

    def __init__(self, runtime, **kw) -> None:
        super().__init__(runtime, reconciler=FakeReconciler(), qos=FakeQos(), tc=None, **kw)
        self.runs: queue.Queue[str] = queue.Queue()
        self.fail_next = False

    def run_once(self, reason: str):
        self.runs.put(reason)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a run that blows up")
        return None


@pytest.fixture
def looping(api, monkeypatch):
    monkeypatch.setattr(api.runtime, "config", dataclasses.replace(api.runtime.config, reconcile_interval=1))
    worker = RecordingWorker(api.runtime)  # checks for drift every second, the shortest interval there is
    worker.start()
    assert worker.runs.get(timeout=10) == "start-up"
    yield worker
    worker.stop()
    assert not worker.alive()


def test_a_burst_of_pokes_is_one_run_that_names_every_reason(looping):
    for reason in ("store changed: routes", "store changed: services", "store changed: routes"):
        looping.poke(reason)
    assert looping.runs.get(timeout=10) == "store changed: routes; store changed: services"


def test_with_nothing_to_do_the_worker_still_checks_for_drift_periodically(looping):
    assert looping.runs.get(timeout=10) == "periodic drift check"


def test_a_run_that_raises_does_not_end_the_worker(looping):
    looping.fail_next = True
    looping.poke("first")
    assert looping.runs.get(timeout=10) == "first"
    looping.poke("second")
    assert looping.runs.get(timeout=10) == "second"
    assert looping.alive()


# --- what the seed's operator finds with `journalctl -u arctic | grep tproxymgr` ---------------------------------

@pytest.fixture
def tproxymgr(subsystem_log):
    """(message, fields) of each tproxymgr record so far."""
    caplog = subsystem_log("tproxymgr")
    return lambda: [(r.getMessage(), r.fields) for r in caplog.records if r.name == "arctic.tproxymgr"]


def test_data_plane_config_updates_and_shaping_changes_are_logged_per_service_under_tproxymgr(worker, tproxymgr):
    worker.run_once("first")
    assert tproxymgr() == [("data-plane config updated", {"service_id": SVC, "change": "added", "routes": 0})]
    worker.run_once("nothing changed")
    assert len(tproxymgr()) == 1

    with worker.runtime.db.write() as tx:
        tx.execute("UPDATE services SET bandwidth_limit_mbps = 50 WHERE id = ?", (SVC,))
    worker.run_once("limited")
    assert ("service shaping changed", {"service_id": SVC, "bandwidth_limit_mbps": 50, "previous_mbps": 0}) \
        in tproxymgr()
    assert ("data-plane config updated", {"service_id": SVC, "change": "updated", "routes": 0}) in tproxymgr()

    with worker.runtime.db.write() as tx:
        tx.execute("DELETE FROM services WHERE id = ?", (SVC,))
    worker.run_once("deleted")
    assert tproxymgr()[-1] == ("data-plane config updated", {"service_id": SVC, "change": "removed", "routes": 0})


def test_a_restarted_agent_logs_what_it_enforces_not_a_change(worker, tproxymgr):
    with worker.runtime.db.write() as tx:
        tx.execute("UPDATE services SET bandwidth_limit_mbps = 20 WHERE id = ?", (SVC,))
    worker.run_once("first")
    restarted = ReconcileWorker(worker.runtime, reconciler=FakeReconciler(), qos=FakeQos(), tc=None)
    before = len(tproxymgr())
    restarted.run_once("after a restart")
    assert tproxymgr()[before:] == [("service shaped", {"service_id": SVC, "bandwidth_limit_mbps": 20})]


class FakeSupervisor:
    def config_written(self, changed: bool) -> None:
        """The data plane would reload here."""


class KeepingReconciler(FakeReconciler):
    """Records whether each run asked to keep the interception state for live connections."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[bool] = []

    def apply(self, desired) -> Plan:
        self.kept.append(desired.proxied_connections)
        return super().apply(desired)


def test_interception_stays_while_connections_may_be_live_and_goes_once_they_ended(api, peer_b):
    """A deleted last route must not cut the connections it diverted: the run that removes it keeps the socket rule
    (the counters may not show the newest connection yet), later runs keep it while the data plane counts open
    connections, and the next run after they ended removes it, soon (not after the 30 s drift interval)."""
    stats = {"updated_at": time.time(), "active_connections": 0}
    api.runtime.dataplane_stats = lambda: dict(stats, updated_at=time.time())
    sid = api.post("/v1/services", json={"target_peer_id": peer_b}).get_json()["id"]  # agent-a is the source
    route = api.post(f"/v1/services/{sid}/routes", json={"routes": [{"dest_cidr": "192.168.200.0/24",
                                                                     "priority": 100}]}).get_json()["route_ids"][0]
    reconciler = KeepingReconciler()
    worker = ReconcileWorker(api.runtime, supervisor=FakeSupervisor(), reconciler=reconciler, qos=FakeQos(), tc=None)
    worker.run_once("route exists")  # diverts: nothing to keep beyond the route itself
    api.delete(f"/v1/services/{sid}/routes/{route}")
    worker.run_once("route deleted")  # the kernel diverted until now: keep
    stats["active_connections"] = 1
    worker.run_once("recheck")  # the counters show a live connection: keep
    assert worker._kept_for_live
    stats["active_connections"] = 0
    worker.run_once("recheck")  # ended: the table may go
    assert reconciler.kept == [False, True, True, False]
    assert not worker._kept_for_live
