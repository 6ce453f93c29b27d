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
        from arctic.cluster.gossip import Gossiper  # noqa: PLC0415

        self.runtime.gossiper = Gossiper(self.runtime, interval=config.sync_interval)
        self.runtime.on_sync(lambda reason: self.runtime.gossiper.poke())
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
