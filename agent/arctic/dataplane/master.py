"""The data plane's master process: starts the workers, reloads them, merges their stats, drains them.

``python -m arctic.dataplane --config FILE`` runs this. It is the process the agent supervises (pidfile, signals)
and it never touches a connection itself, so it stays small and single-threaded, and can fork workers at any
time (a worker that dies is started again after a back-off: 1 s, doubling to 30 s).

* **Start**: the config and identity key are checked here first (exit status 2 when they are bad), then one
  worker per CPU (``workers`` in the config) is forked; if a worker cannot open its listeners, all stop and the
  exit status is 1.
* **Reload** (SIGHUP, or a new mtime of the file, checked every second): the file is validated here; a bad one is
  refused as a whole (``config_error`` in the stats, the running config stays) so a typo never tears down traffic.
  A good one goes to every worker with a new generation; ``config_generation`` in the stats moves once all of
  them applied it. Established streams are not touched.
* **Stats**: every worker reports each second; the merged view (``stats.merge``) is written to the stats file.
* **Stop** (SIGTERM/SIGINT): every worker stops accepting and drains for ``drain_seconds``; a second signal cuts
  the drain short. Exit status 0 after a clean stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arctic.logs import SubsystemLogger

from .config import ConfigError, default_stats_path
from .keys import IdentityKeyError
from .stats import RateMeter, merge, write_json_atomic
from .worker import Snapshot, Worker, build_snapshot

TICK = 0.2
START_TIMEOUT = 20.0
RESTART_FIRST, RESTART_MAX = 1.0, 30.0
KILL_GRACE = 10.0


@dataclass
class WorkerHandle:
    index: int
    pid: int
    sock: socket.socket
    buffer: bytes = b""
    ready: bool = False
    failed: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    listening: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    drained: bool = False
    started: float = field(default_factory=time.monotonic)


class Master:
    def __init__(self, config_path: Path, log: SubsystemLogger) -> None:
        self.config_path = config_path
        self.log = log
        self.started_at = time.time()
        self.snapshot: Snapshot | None = None
        self.config_text = ""
        self.generation = 0
        self.config_error: str | None = None
        self.workers: dict[int, WorkerHandle] = {}
        self.count = 0
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self._flags = {"reload": False, "stop": 0, "child": False}
        self._stamp: tuple | None = None
        self._restart_at: dict[int, float] = {}
        self._restart_delay: dict[int, float] = {}
        self.restarts = 0  # workers that died and were restarted (the stats and /metrics show it)
        self._rates = RateMeter()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending: tuple[int, str] | None = None  # a reload being applied: (generation, text)
        self._pending_errors: dict[int, str] = {}
        self._pending_snapshot: Snapshot | None = None
        self._why = ""
        self.applied_generation = 0  # the generation every worker runs (what the stats file reports)
        self._applied_text = ""
        self._stats_failing = False
        self._stats_path = default_stats_path(config_path)
        self._instance = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound by ``_claim``

    # --- configuration -----------------------------------------------------------------------------------------

    def _read(self) -> tuple[str, Snapshot]:
        stamp = self._file_stamp()
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read data-plane config {self.config_path}: {err.strerror or err}") from None
        self._stamp = stamp
        return text, build_snapshot(text, self.config_path.parent, self.generation + 1)

    def _file_stamp(self) -> tuple | None:
        try:
            st = self.config_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _describe(self, snap: Snapshot) -> dict[str, Any]:
        cfg = snap.cfg
        return {"generation": snap.generation, "peer_id": cfg.local_peer_id, "encryption": cfg.encryption,
                "services": len(cfg.services), "source_routes": len(cfg.source_routes), "workers": self.count,
                "tproxy_port": cfg.tproxy_port, "tunnel": f"{cfg.tunnel_bind}:{cfg.tunnel_port}"}

    # --- start -------------------------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.config_text, snap = self._read()
        except (ConfigError, IdentityKeyError) as err:
            self.log.error("cannot start: bad configuration", error=str(err), config=str(self.config_path))
            return 2
        try:
            self._claim(snap.cfg.tproxy_port)
        except OSError as err:
            self.log.error("cannot start: cannot listen", error=str(err))
            return 1
        self.generation = self.applied_generation = snap.generation
        self._applied_text = self.config_text
        self.snapshot = snap
        self.count = snap.cfg.workers or os.cpu_count() or 1
        self._install_signals()
        for index in range(self.count):
            self._spawn(index)
        code = self._await_ready()
        if code:
            self._stop_workers(0)
            return code
        if self.stopping:  # stopped while starting
            self._stop_workers(snap.cfg.drain_seconds)
            return 0
        self.log.info("data plane started", **self._describe(snap))
        self._write_stats()
        return self._loop()

    def _claim(self, port: int) -> None:
        """One data plane per network namespace and port. Every listener uses SO_REUSEPORT (the workers share
        them), which would also let a second data plane quietly take half the traffic; an abstract Unix socket
        named after the port (network-namespace wide, gone with the process) refuses the second one."""
        try:
            self._instance.bind(f"\0arctic-dataplane:{port}")
        except OSError:
            self._instance.close()
            raise OSError(f"another data plane already serves TPROXY port {port} in this network namespace") \
                from None

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w)

        def on_hup(_signum: int, _frame: Any) -> None:
            self._flags["reload"] = True

        def on_term(signum: int, _frame: Any) -> None:
            self._flags["stop"] += 1

        def on_child(_signum: int, _frame: Any) -> None:
            self._flags["child"] = True

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGCHLD, on_child)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                ours.close()
                self._instance.close()  # the claim is the master's: it ends with the master
                for handle in self.workers.values():
                    handle.sock.close()
                self.selector.close()
                signal.set_wakeup_fd(-1)
                os.close(self._wake_r)
                os.close(self._wake_w)
                for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(signum, signal.SIG_DFL)
                code = Worker(index, self.count, theirs, self.config_path, self.log).run(
                    self.config_text, self.generation)
            except BaseException:  # noqa: BLE001 - the worker must never return into the master's code
                self.log.exception("worker crashed", worker=index)
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        handle = WorkerHandle(index=index, pid=pid, sock=ours, generation=self.generation)
        self.workers[index] = handle
        self.selector.register(ours, selectors.EVENT_READ, handle)

    def _await_ready(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._poll(TICK)
            if self._flags["stop"]:
                self.stopping = True
                return 0
            failed = [h for h in self.workers.values() if h.failed]
            if failed:
                error = failed[0].failed or {}
                self.log.error("cannot start" + (": cannot listen" if error.get("code") == 1 else ""),
                               error=error.get("error"), worker=failed[0].index)
                return int(error.get("code", 1))
            dead = [h for h in self.workers.values() if h.pid == 0]
            if dead:
                self.log.error("cannot start: a worker exited during start-up", worker=dead[0].index)
                return 1
            if all(h.ready for h in self.workers.values()):
                return 0
        self.log.error("cannot start: workers did not report ready", timeout=START_TIMEOUT)
        return 1

    # --- running -------------------------------------------------------------------------------------------------

    def _loop(self) -> int:
        last_check = last_stats = time.monotonic()
        while True:
            self._poll(TICK)
            if self._flags["stop"]:
                break
            now = time.monotonic()
            if self._flags["reload"]:
                self._flags["reload"] = False
                self.reload("SIGHUP")
            elif now - last_check >= 1.0:
                last_check = now
                if self._file_stamp() != self._stamp:
                    self.reload("config file changed")
            self._restart_due(now)
            if now - last_stats >= 1.0:
                last_stats = now
                self._write_stats()
        assert self.snapshot is not None
        self._stop_workers(self.snapshot.cfg.drain_seconds)
        self._write_stats()
        self.log.info("stopped")
        return 0

    def _poll(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 512):
                        pass
                continue
            self._read_worker(key.data)
        if self._flags["child"]:
            self._flags["child"] = False
            self._reap()

    def _read_worker(self, handle: WorkerHandle) -> None:
        try:
            data = handle.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._unregister(handle)
            return
        handle.buffer += data
        while b"\n" in handle.buffer:
            line, handle.buffer = handle.buffer.split(b"\n", 1)
            if line:
                self._message(handle, json.loads(line))

    def _unregister(self, handle: WorkerHandle) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(handle.sock)
        handle.sock.close()

    def _message(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ready":
            handle.ready = True
            handle.listening = msg.get("listening", {})
        elif kind == "failed":
            handle.failed = msg
        elif kind == "stats":
            handle.stats = msg["stats"]
            handle.listening = handle.stats.get("listening", handle.listening)
        elif kind == "reloaded":
            self._reloaded(handle, msg)
        elif kind == "drained":
            handle.drained = True

    def _send(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        try:
            handle.sock.setblocking(True)
            handle.sock.sendall(data)
        except OSError:
            pass  # the worker is gone; reaping handles it
        finally:
            with contextlib.suppress(OSError):
                handle.sock.setblocking(False)

    # --- reload -------------------------------------------------------------------------------------------------

    def reload(self, why: str) -> None:
        try:
            text, snap = self._read()
        except (ConfigError, IdentityKeyError) as err:
            self.config_error = str(err)
            self.log.error("config reload refused, keeping the running config", trigger=why, error=str(err))
            self._write_stats()
            return
        self._pending = (snap.generation, text)
        self._pending_errors = {}
        self.generation = snap.generation
        self.config_text = text
        self._pending_snapshot = snap
        for handle in self.workers.values():
            if handle.pid:
                self._send(handle, {"cmd": "reload", "generation": snap.generation, "config": text})
        self._why = why

    def _reloaded(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        if msg.get("error"):
            self._pending_errors[handle.index] = msg["error"]
        else:
            handle.generation = msg["generation"]
            handle.listening = msg.get("listening", handle.listening)
        if self._pending is None or msg.get("generation") != self._pending[0]:
            return
        live = [h for h in self.workers.values() if h.pid]
        if any(h.generation != self._pending[0] and h.index not in self._pending_errors for h in live):
            return  # not everybody answered yet
        generation = self._pending[0]
        self._pending = None
        if self._pending_errors:
            error = next(iter(self._pending_errors.values()))
            self.config_error = error
            self.config_text = self._applied_text  # a worker started later runs what the others run
            self.log.error("config reload refused by a worker, keeping the running config", trigger=self._why,
                           error=error)
        else:
            self.config_error = None
            self.snapshot = self._pending_snapshot
            self.applied_generation = generation
            self._applied_text = self.config_text
            assert self.snapshot is not None
            self.log.info("config reloaded", trigger=self._why, **self._describe(self.snapshot))
        self._write_stats()

    # --- workers that end -----------------------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for handle in self.workers.values():
                if handle.pid == pid:
                    handle.pid = 0
                    self._unregister(handle)
                    if not self.stopping and handle.ready:
                        self._worker_died(handle, status)

    def _worker_died(self, handle: WorkerHandle, status: int) -> None:
        delay = self._restart_delay.get(handle.index, RESTART_FIRST)
        if time.monotonic() - handle.started > 60:
            delay = RESTART_FIRST
        self._restart_delay[handle.index] = min(delay * 2, RESTART_MAX)
        self.restarts += 1
        self._restart_at[handle.index] = time.monotonic() + delay
        self.log.error("worker exited; restarting it", worker=handle.index, status=os.waitstatus_to_exitcode(status),
                       restart_in=delay)

    def _restart_due(self, now: float) -> None:
        for index, when in list(self._restart_at.items()):
            if now >= when:
                del self._restart_at[index]
                self._spawn(index)
                self.workers[index].ready = True  # its "ready" (or "failed") arrives later; it counts as running

    # --- stop -------------------------------------------------------------------------------------------------------

    def _stop_workers(self, drain_seconds: float) -> None:
        self.stopping = True
        for handle in self.workers.values():
            if handle.pid:
                self._send(handle, {"cmd": "drain", "seconds": drain_seconds})
        self.log.info("draining", workers=sum(1 for h in self.workers.values() if h.pid),
                      drain_seconds=drain_seconds)
        hurried = False
        deadline = time.monotonic() + drain_seconds + KILL_GRACE
        while any(h.pid for h in self.workers.values()) and time.monotonic() < deadline:
            self._poll(TICK)
            self._reap()
            if self._flags["stop"] > 1 and not hurried:
                hurried = True
                for handle in self.workers.values():
                    if handle.pid:
                        self._send(handle, {"cmd": "hurry"})
        for handle in self.workers.values():
            if handle.pid:
                self.log.error("worker did not stop in time; killing it", worker=handle.index, pid=handle.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(handle.pid, signal.SIGKILL)
        while any(h.pid for h in self.workers.values()):
            time.sleep(0.05)
            self._reap()

    # --- stats ----------------------------------------------------------------------------------------------------

    def _write_stats(self) -> None:
        handles = sorted(self.workers.values(), key=lambda h: h.index)
        first = next((h for h in handles if h.listening), None)
        snap = self.snapshot
        data = merge([h.stats for h in handles if h.stats],
                     pid=os.getpid(), started_at=round(self.started_at, 3), updated_at=round(time.time(), 3),
                     config_generation=self.applied_generation,
                     config_error=self.config_error, draining=self.stopping,
                     listening=first.listening if first else {},
                     local_peer_id=snap.cfg.local_peer_id if snap else None, worker_count=self.count,
                     workers_running=sum(1 for h in handles if h.pid), worker_restarts=self.restarts)
        self._rates.add_rates(time.monotonic(), data["services"])
        path = snap.cfg.stats_file if snap and snap.cfg.stats_file else self._stats_path
        try:
            write_json_atomic(path, data)
        except OSError as err:
            if not self._stats_failing:  # once per outage, not every second
                self.log.warning("cannot write stats file", path=str(path), error=str(err))
            self._stats_failing = True
        else:
            self._stats_failing = False
