"""The reconcile worker's bookkeeping around one run, with the kernel parts faked (the lab tests run them for real)."""

from __future__ import annotations

import dataclasses
import json
import queue
import time

import pytest
from agentkit import NoShaping, insert_inbound_interface_service
from arctic.daemon import reconcile
from arctic.daemon.reconcile import ReconcileWorker, RunReport
from arctic.netconf.errors import DesiredStateError, NftError, PolicyRoutingError
from arctic.netconf.interfaces import InterfaceStatus
from arctic.netconf.qos import QosError
from arctic.netconf.reconciler import Plan
from arctic.store import repository as repo

SVC = "svc_01JRECONCILEWORKER00000000"


class FakeReconciler:
    """Applies by reporting the service interface as up with an address; or refuses, or fails, as told."""

    def __init__(self) -> None:
        self.refuse = False
        self.fail: Exception | None = None  # raised by the next apply (once), e.g. what a failed nft call raises
        self.last_plan = None

    def apply(self, desired) -> Plan:
        if self.refuse:
            raise DesiredStateError("refused on purpose")
        if self.fail is not None:
            err, self.fail = self.fail, None
            raise err
        status = InterfaceStatus(SVC, "arc-test", "eth0", "02:00:00:00:00:01", "192.168.100.10/24", None, "up",
                                 False)
        self.last_plan = Plan("", "", "", "", "", {}, interface_status=[status])
        return self.last_plan


@pytest.fixture
def worker(api, peer_b) -> ReconcileWorker:
    """agent-a (this runtime) is the *target* of SVC, a service that asks for an interface."""
    insert_inbound_interface_service(api.runtime, SVC, peer_b)
    return ReconcileWorker(api.runtime, reconciler=FakeReconciler(), qos=NoShaping(), tc=None)


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


# --- temporary and permanent failures ----------------------------------------------------------------------------

class FailingShaping(NoShaping):
    def __init__(self, error: QosError) -> None:
        self.error = error

    def apply(self, by_dev) -> dict:
        raise self.error


def test_a_failed_kernel_call_is_a_temporary_failure_and_a_refused_desired_state_a_permanent_one(worker):
    worker.reconciler.fail = NftError("nft refused the inet arctic transaction (nothing changed): Device or "
                                      "resource busy")
    assert worker.run_once("nft busy").temporary
    assert not worker.run_once("nft fine again").temporary
    worker.reconciler.fail = PolicyRoutingError("RTNETLINK answers: No buffer space available")
    assert worker.run_once("netlink failed").temporary
    worker.reconciler.refuse = True
    report = worker.run_once("refused")
    assert report.errors and not report.temporary, "the same input is refused the same way: nothing to retry"


def test_a_failed_tc_call_is_temporary_and_a_refusal_of_shaping_is_not(worker):
    worker.qos = FailingShaping(QosError("eth1: tc -batch failed: RTNETLINK answers: Device or resource busy",
                                         temporary=True))
    assert worker.run_once("tc busy").temporary
    worker.qos = FailingShaping(QosError("interface eth1 already has a root qdisc (tbf 1:) that Arctic did not "
                                         "install; refusing to replace it"))
    report = worker.run_once("foreign qdisc")
    assert report.errors and not report.temporary


# --- the loop itself ---------------------------------------------------------------------------------------------

class RecordingWorker(ReconcileWorker):
    """The real loop around a run that only records why it ran and ends as told: ``ok`` (the default), ``temporary``
    or ``permanent`` (a report with such an error) or ``raise``. Each back-off decision goes to ``delays``."""

    def __init__(self, runtime, **kw) -> None:
        super().__init__(runtime, reconciler=FakeReconciler(), qos=NoShaping(), tc=None, **kw)
        self.runs: queue.Queue[str] = queue.Queue()
        self.delays: queue.Queue[float | None] = queue.Queue()
        self.outcomes: list[str] = []
        self.fail_next = False

    def run_once(self, reason: str):
        self.runs.put(reason)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if self.fail_next or outcome == "raise":
            self.fail_next = False
            raise RuntimeError("a run that blows up")
        report = RunReport(reason, time.time())
        if outcome != "ok":
            report.errors.append(f"a {outcome} failure")
            report.temporary = outcome == "temporary"
        return report

    def _after_run(self, temporary: bool) -> float | None:
        delay = super()._after_run(temporary)
        self.delays.put(delay)
        return delay


@pytest.fixture
def looping(api, monkeypatch):
    monkeypatch.setattr(reconcile, "RETRY_SECONDS", (0.01, 0.02, 0.04))  # the real ones are 0.5 ... 8 s
    monkeypatch.setattr(api.runtime, "config", dataclasses.replace(api.runtime.config, reconcile_interval=1))
    worker = RecordingWorker(api.runtime)  # checks for drift every second, the shortest interval there is
    worker.start()
    assert worker.runs.get(timeout=10) == "start-up"
    assert worker.delays.get(timeout=10) is None
    yield worker
    worker.stop()
    assert not worker.alive()


def test_a_burst_of_pokes_is_one_run_that_names_every_reason(looping):
    for reason in ("store changed: routes", "store changed: services", "store changed: routes"):
        looping.poke(reason)
    assert looping.runs.get(timeout=10) == "store changed: routes; store changed: services"


def test_with_nothing_to_do_the_worker_still_checks_for_drift_periodically(looping):
    assert looping.runs.get(timeout=10) == "periodic drift check"


def test_a_run_that_raises_does_not_end_the_worker_and_is_tried_again_soon(looping):
    looping.fail_next = True
    looping.poke("first")
    assert looping.runs.get(timeout=10) == "first"
    assert looping.delays.get(timeout=10) == 0.01
    assert looping.runs.get(timeout=10) == "retry after a temporary failure (1 in a row)"
    looping.poke("second")
    assert looping.runs.get(timeout=10) == "second"
    assert looping.alive()


def test_a_temporary_failure_is_retried_with_back_off_without_a_poke_until_a_run_succeeds(looping):
    """0.01, 0.02, 0.04 s, then the last delay again; the interval (1 s) would only come after a quiet second, and
    its runs say "periodic drift check", so every run here is a retry the loop scheduled itself."""
    looping.outcomes = ["temporary"] * 4
    looping.poke("route added")
    assert looping.runs.get(timeout=10) == "route added"
    for failures, delay in enumerate((0.01, 0.02, 0.04, 0.04), start=1):
        assert looping.delays.get(timeout=10) == delay
        assert looping.runs.get(timeout=10) == f"retry after a temporary failure ({failures} in a row)"
    assert looping.delays.get(timeout=10) is None, "a run without a temporary failure ends the back-off"
    looping.outcomes = ["temporary"]
    looping.poke("later")
    assert looping.runs.get(timeout=10) == "later"
    assert looping.delays.get(timeout=10) == 0.01, "and the next temporary failure starts it from the shortest delay"


def test_a_permanent_failure_is_reported_and_not_retried(looping):
    looping.outcomes = ["permanent"]
    looping.poke("bad desired state")
    assert looping.runs.get(timeout=10) == "bad desired state"
    assert looping.delays.get(timeout=10) is None
    assert looping.runs.get(timeout=10) == "periodic drift check", "the next run is the periodic one, no retry"


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
    restarted = ReconcileWorker(worker.runtime, reconciler=FakeReconciler(), qos=NoShaping(), tc=None)
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
    worker = ReconcileWorker(api.runtime, supervisor=FakeSupervisor(), reconciler=reconciler, qos=NoShaping(), tc=None)
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
