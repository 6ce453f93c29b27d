"""What decides the agent's READY and STATUS for systemd: the reconcile worker's first run (real loop, faked kernel)
and ``AgentService.startup_pending`` / ``status_line`` (a real service, not started: nothing touches the kernel)."""

from __future__ import annotations

import queue
import time

import pytest
from agentkit import NoShaping
from arctic.api.app import create_app
from arctic.config import parse_config
from arctic.daemon.reconcile import ReconcileWorker, RunReport
from arctic.daemon.service import AgentService
from arctic.netconf.reconciler import Plan


class FakeReconciler:
    last_plan = None

    def apply(self, desired) -> Plan:
        self.last_plan = Plan("", "", "", "", "", {}, interface_status=[])
        return self.last_plan


class Worker(ReconcileWorker):
    """The real loop; each run's outcome ("report", "none" or the exception's text) is queued after it ended."""

    def __init__(self, runtime, *, fail_first: bool = False) -> None:
        super().__init__(runtime, reconciler=FakeReconciler(), qos=NoShaping(), tc=None)
        self.fail_first = fail_first
        self.outcomes: queue.Queue[str] = queue.Queue()

    def run_once(self, reason: str):
        try:
            if self.fail_first:
                self.fail_first = False
                raise RuntimeError("the first run blows up")
            report = super().run_once(reason)
        except RuntimeError as err:
            self.outcomes.put(str(err))
            raise
        self.outcomes.put("none" if report is None else "report")
        return report


@pytest.fixture
def running():
    workers: list[Worker] = []

    def start(runtime, **kw) -> Worker:
        worker = Worker(runtime, **kw)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def test_an_agent_not_bootstrapped_still_completes_its_first_run(fresh_api, running):
    worker = running(fresh_api.runtime)
    assert worker.first_run_done.wait(10), "the first run of an agent without a bootstrap must count as done"
    assert worker.outcomes.get(timeout=1) == "none" and worker.last is None and worker.failure is None


def test_a_first_run_that_raises_counts_as_done_and_readiness_says_it_failed(api, running):
    worker = running(api.runtime, fail_first=True)
    assert worker.first_run_done.wait(10), "a broken run must not hang start-up"
    assert worker.outcomes.get(timeout=1) == "the first run blows up"
    assert worker.readiness() == {"reconcile": "error: the last run failed: RuntimeError: the first run blows up"}
    worker.poke("again")
    assert worker.outcomes.get(timeout=10) == "report"
    assert worker.failure is None and worker.readiness() == {"reconcile": "ok"}


# --- AgentService: what start-up waits for, and the status line ------------------------------------------------------

def make_service(tmp_path, issuer, **config) -> AgentService:
    raw = {"data_dir": str(tmp_path / "data"), "listen": "127.0.0.1:8080",
           "recovery_token_file": str(tmp_path / "recovery.token"),
           "license": {"issuer_public_keys": [issuer.public_b64]}} | config
    return AgentService(parse_config(raw, env={}))


def bootstrap(service: AgentService, issuer) -> None:
    client = create_app(service.runtime).test_client()
    resp = client.post("/v1/bootstrap", json={"license": issuer.licence(), "name": "agent-a"})
    assert resp.status_code == 201, resp.get_json()


def test_without_kernel_management_start_up_waits_for_nothing_but_the_api(tmp_path, issuer):
    service = make_service(tmp_path, issuer, apply_kernel=False)
    assert service.runtime.reconcile_worker is None and service.startup_pending() is None
    assert service.status_line() == "ready: waiting for bootstrap (POST /v1/bootstrap)"
    bootstrap(service, issuer)
    assert service.status_line() == "ready: kernel not managed (apply_kernel: false)"


def test_start_up_waits_for_the_first_run_then_for_the_data_plane_it_configured(tmp_path, issuer, monkeypatch):
    service = make_service(tmp_path, issuer)
    worker, supervisor = service.runtime.reconcile_worker, service.supervisor
    stats: dict = {}  # what the data plane's stats file says (nothing yet: it is starting)
    monkeypatch.setattr(supervisor, "stats", lambda: stats)
    assert service.startup_pending() == "waiting for the first reconcile"

    worker.first_run_done.set()  # and it returned None: not bootstrapped, nothing to reconcile
    assert service.startup_pending() is None
    assert service.status_line() == "ready: waiting for bootstrap (POST /v1/bootstrap)"

    bootstrap(service, issuer)
    worker.last = RunReport(reason="start-up", started_at=0.0, services=3)  # a run that configured the data plane
    supervisor._wanted, supervisor._pid = True, 4242  # ... and launched it (as config_written does)
    monkeypatch.setattr(supervisor, "running", lambda: True)
    assert service.startup_pending() == "waiting for the data plane (starting)"
    assert service.status_line() == "degraded: dataplane: starting"
    stats.update(pid=4242, listening={"tunnel": "0.0.0.0:61000"}, updated_at=time.time())
    assert service.startup_pending() is None
    assert service.status_line() == "ready: 3 services, data plane up"

    worker.last.errors.append("nft refused the table")
    stats.clear()
    assert service.status_line() == "degraded: reconcile: error: nft refused the table", "errors come first"


def test_a_first_run_that_raised_does_not_wait_for_a_data_plane_it_never_configured(tmp_path, issuer):
    service = make_service(tmp_path, issuer)
    bootstrap(service, issuer)
    worker = service.runtime.reconcile_worker
    worker.failure = "RuntimeError: boom"
    worker.first_run_done.set()
    assert service.startup_pending() is None
    assert service.status_line() == "degraded: reconcile: error: the last run failed: RuntimeError: boom"


def test_without_a_data_plane_nothing_is_waited_for_after_the_first_run(tmp_path, issuer):
    service = make_service(tmp_path, issuer, dataplane={"enabled": False})
    bootstrap(service, issuer)
    worker = service.runtime.reconcile_worker
    worker.first_run_done.set()
    worker.last = RunReport(reason="start-up", started_at=0.0, services=1)
    assert service.supervisor is None and service.startup_pending() is None
    assert service.status_line() == "ready: 1 services, no data plane (dataplane.enabled: false)"
