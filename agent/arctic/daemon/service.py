"""The agent process: composition of runtime, API server and background workers.

Each background part is started here and stopped in reverse order, so a SIGTERM leaves no thread
half-way through a write. The API runs in waitress on its own thread.
"""

from __future__ import annotations

import contextlib
import threading

from waitress.server import create_server

from arctic.api.app import create_app
from arctic.auth.recovery import write_recovery_token
from arctic.config import AgentConfig
from arctic.logs import get_logger
from arctic.runtime import Agent, StartupError

__all__ = ["AgentService", "StartupError"]
log = get_logger("api")


class AgentService:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.runtime = Agent(config)
        self.runtime.verify_stored_licence()
        self._server = None
        self._server_thread: threading.Thread | None = None
        self.supervisor = None  # the DataplaneSupervisor, when this agent runs a data plane
        from arctic.cluster.gossip import Gossiper  # noqa: PLC0415

        self.runtime.gossiper = Gossiper(self.runtime, interval=config.sync_interval)
        self._workers: list = [self.runtime.gossiper, *self._kernel_workers(config)]
        if self.runtime.bootstrapped:
            self.runtime.replicator.reseal_all()

    def _kernel_workers(self, config: AgentConfig) -> list:
        """Data-plane supervisor and reconcile worker (started in this order, stopped in reverse); none when the
        agent must not touch the kernel (``apply_kernel: false``)."""
        if not config.apply_kernel:
            return []
        from arctic.daemon.dataplane_supervisor import DataplaneSupervisor  # noqa: PLC0415
        from arctic.daemon.reconcile import ReconcileWorker  # noqa: PLC0415

        supervisor = DataplaneSupervisor(config) if config.dataplane.enabled else None
        self.supervisor = supervisor
        worker = ReconcileWorker(self.runtime, supervisor)
        self.runtime.reconcile_worker = worker
        self.runtime.add_readiness(worker.readiness)
        if supervisor is None:
            return [worker]
        self.runtime.add_readiness(supervisor.readiness)
        self.runtime.dataplane_stats = supervisor.stats
        return [supervisor, worker]

    def start(self) -> None:
        try:
            self.runtime.recovery_token = write_recovery_token(self.config.recovery_token_file)
        except OSError as err:
            raise StartupError(f"cannot write recovery token {self.config.recovery_token_file}: {err}") from None
        log.info("recovery token written", path=str(self.config.recovery_token_file))
        for worker in self._workers:
            worker.start()
        app = create_app(self.runtime)
        try:
            self._server = create_server(app, host=self.config.listen_host, port=self.config.listen_port,
                                         threads=8, ident="arctic", clear_untrusted_proxy_headers=True)
        except OSError as err:
            raise StartupError(f"cannot listen on {self.config.listen_host}:{self.config.listen_port}: "
                               f"{err.strerror}") from None
        self._server_thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._server_thread.start()
        log.info("agent started", listen=f"{self.config.listen_host}:{self.config.listen_port}",
                 advertise=self.config.advertised, bootstrapped=self.runtime.bootstrapped,
                 peer_id=self.runtime.local_peer_id)

    def healthy(self) -> bool:
        threads_ok = all(w.alive() for w in self._workers if hasattr(w, "alive"))
        return threads_ok and self._server_thread is not None and self._server_thread.is_alive()

    # --- what systemd is told (arctic.daemon.main) -----------------------------------------------------------------

    def startup_pending(self) -> str | None:
        """What start-up still waits for, or None once the agent may call itself ready. ``start()`` has opened the
        store and the API listens; then the first reconcile run must have ended and, when that run gave the data
        plane a config, the data plane must report ready."""
        worker = self.runtime.reconcile_worker
        if worker is None:
            return None  # apply_kernel: false: the API is all there is
        if not worker.first_run_done.is_set():
            return "waiting for the first reconcile"
        if self.supervisor is None or worker.last is None:
            return None  # no data plane, nothing to reconcile before bootstrap, or the run raised (status says so)
        check = self.supervisor.readiness()["dataplane"]
        return None if check == "ok" else f"waiting for the data plane ({check})"

    def status_line(self) -> str:
        """One line for ``systemctl status`` once started: ``ready: ...`` or ``degraded: <first problem>``."""
        if not self.runtime.bootstrapped:
            return "ready: waiting for bootstrap (POST /v1/bootstrap)"
        checks = self.runtime.readiness_checks()
        problems = sorted((name for name, value in checks.items() if value != "ok"),
                          key=lambda name: not checks[name].startswith("error"))  # errors first, then "starting"
        if problems:
            return f"degraded: {problems[0]}: {checks[problems[0]]}"
        worker = self.runtime.reconcile_worker
        if worker is None:
            return "ready: kernel not managed (apply_kernel: false)"
        services = worker.last.services if worker.last is not None else 0
        return f"ready: {services} services, " + ("data plane up" if self.supervisor is not None
                                                  else "no data plane (dataplane.enabled: false)")

    def stop(self) -> None:
        """Stop the API first (no new writes), then the workers in reverse start order."""
        if self._server is not None and self._server_thread is not None:
            # waitress's loop is not thread-safe: close its sockets from inside the loop (trigger
            # thunk); once its map is empty the loop returns and the worker threads are shut down.
            server = self._server

            def _close_all() -> None:
                for dispatcher in list(server._map.values()):
                    with contextlib.suppress(OSError):
                        dispatcher.close()

            server.trigger.pull_trigger(_close_all)
            self._server_thread.join(timeout=5)
            server.task_dispatcher.shutdown(timeout=5)
        for worker in reversed(self._workers):
            worker.stop()
