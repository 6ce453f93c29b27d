"""Keeps the data plane (``python -m arctic.dataplane --config FILE``) running beside the agent (subsystem tproxymgr).

Why a separate process, and why it outlives the agent
    Live connections are relayed by the data plane, so restarting or upgrading the control plane must not touch
    it. The child is started in its own session (no signal aimed at the agent's process group reaches it) and,
    with ``dataplane.keep_on_stop`` (the default), an agent stop leaves it running. The next agent instance finds
    it through the pidfile and *adopts* it instead of starting a second one.

Identity of a process
    The pidfile (``<data_dir>/dataplane.pid``) records the pid and the kernel start time of the process. A pid
    alone can be recycled; pid + start time + a command line naming ``arctic.dataplane`` and our config file
    cannot, so we never signal a stranger.

Restarts
    When the data plane dies it is started again after a back-off (1 s, doubling to 30 s; reset after it has run
    for a minute). Its output goes to ``<data_dir>/dataplane.log`` (a file, not a pipe: the agent may go away).

Readiness
    Read from the stats file the data plane rewrites every second: the right pid, the tunnel listener open, a
    fresh timestamp and no refused config.

systemd: the unit must use ``KillMode=process`` for an agent restart to keep the data plane (``mixed`` would SIGKILL it
once the stop timeout ran out).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from arctic.config import AgentConfig
from arctic.logs import get_logger
from arctic.netconf.rendering import DATAPLANE_CONFIG, STATS_FILE
from arctic.procinfo import is_same_process, process_start_time

log = get_logger("tproxymgr")

PIDFILE = "dataplane.pid"
LOGFILE = "dataplane.log"
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 60.0
CHECK_EVERY = 0.5
STATS_FRESH = 5.0


class DataplaneSupervisor:
    def __init__(self, config: AgentConfig, *, python: str = sys.executable) -> None:
        self.data_dir = Path(config.data_dir)
        self.config_path = self.data_dir / DATAPLANE_CONFIG
        self.stats_path = self.data_dir / STATS_FILE
        self.pid_path = self.data_dir / PIDFILE
        self.log_path = self.data_dir / LOGFILE
        self.keep_on_stop = config.dataplane.keep_on_stop
        self.drain_seconds = config.dataplane.drain_seconds
        self.argv = [python, "-m", "arctic.dataplane", "--config", str(self.config_path.resolve()),
                     "--log-format", config.log_format, "--log-level", config.log_level]
        self._proc: subprocess.Popen | None = None  # set when the data plane is our own child
        self._pid: int | None = None
        self._start_time: int | None = None
        self._wanted = False  # True once a config was rendered: from then on it must run
        self._failures = 0
        self._next_start = 0.0
        self._started_mono = 0.0
        self._last_exit: str | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt a data plane left by a previous agent instance, then watch it (nothing is launched before a config
        has been rendered: see ``config_written``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._adopt()
        self._thread = threading.Thread(target=self._watch, name="dataplane-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if not self.running():
                return
            if self.keep_on_stop:
                log.info("agent stopping; data plane left running (dataplane.keep_on_stop)", pid=self._pid)
                return
            self._terminate()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- what the reconciler calls -------------------------------------------------------------------------------

    def config_written(self, changed: bool) -> None:
        """A config is on disk: start the data plane if it is not running, else make it reload (SIGHUP)."""
        with self._lock:
            self._wanted = True
            if self.running():
                if changed:
                    self._signal(signal.SIGHUP)
            elif time.monotonic() >= self._next_start:
                self._launch()

    # --- state -------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._pid if self.running() else None

    def running(self) -> bool:
        with self._lock:
            if self._pid is None:
                return False
            if self._proc is not None:
                return self._proc.poll() is None
            return process_start_time(self._pid) == self._start_time

    def stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def readiness(self) -> dict[str, str]:
        with self._lock:
            if not self._wanted and not self.running():
                return {"dataplane": "waiting for the first reconcile"}
            if not self.running():
                wait = max(0.0, self._next_start - time.monotonic())
                return {"dataplane": f"error: not running ({self._last_exit or 'not started'}); "
                                     f"restart in {wait:.0f}s, see {self.log_path}"}
            pid = self._pid
        stats = self.stats()
        if stats.get("pid") != pid or "tunnel" not in stats.get("listening", {}):
            return {"dataplane": "starting"}
        if time.time() - float(stats.get("updated_at") or 0) > STATS_FRESH:
            return {"dataplane": f"error: stats file {self.stats_path} is stale (data plane hung?)"}
        if stats.get("config_error"):
            return {"dataplane": f"error: config refused, previous config still running: {stats['config_error']}"}
        return {"dataplane": "ok"}

    # --- internals -----------------------------------------------------------------------------------------------

    def _adopt(self) -> None:
        try:
            record = json.loads(self.pid_path.read_text())
            pid, start_time = int(record["pid"]), int(record["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if is_same_process(pid, start_time, "arctic.dataplane", str(self.config_path.resolve())):
            with self._lock:
                self._pid, self._start_time, self._proc = pid, start_time, None
                self._wanted = True
                self._started_mono = time.monotonic()
            log.info("adopted the running data plane of a previous agent instance", pid=pid)
        else:
            self.pid_path.unlink(missing_ok=True)

    def _launch(self) -> None:
        self._last_exit = None
        try:
            with self.log_path.open("ab") as out:
                proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=self.data_dir, start_new_session=True, close_fds=True)
        except OSError as err:
            self._failed(f"cannot start: {err}")
            return
        start_time = process_start_time(proc.pid)
        self._proc, self._pid, self._start_time = proc, proc.pid, start_time
        self._started_mono = time.monotonic()
        tmp = self.pid_path.with_name(f".{PIDFILE}.tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "start_time": start_time}))
        os.replace(tmp, self.pid_path)
        log.info("data plane started", pid=proc.pid, config=str(self.config_path), log=str(self.log_path))

    def _failed(self, why: str) -> None:
        if time.monotonic() - self._started_mono > STABLE_AFTER:
            self._failures = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** self._failures)
        self._failures += 1
        self._next_start = time.monotonic() + delay
        self._last_exit = why
        log.error("data plane is not running; restarting after back-off", reason=why, retry_in=delay,
                  log=str(self.log_path))

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY):
            try:
                with self._lock:
                    if self._pid is not None and not self.running():
                        code = self._proc.returncode if self._proc is not None else None
                        self._pid = self._proc = None
                        self.pid_path.unlink(missing_ok=True)
                        self._failed(f"exited with status {code}" if code is not None else "exited")
                    if self._wanted and self._pid is None and time.monotonic() >= self._next_start \
                            and self.config_path.exists():
                        self._launch()
            except Exception:  # the watcher must outlive any surprise
                log.exception("data plane supervision step failed")

    def _signal(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
        elif self._pid is not None and process_start_time(self._pid) == self._start_time:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, sig)

    def _terminate(self) -> None:
        """SIGTERM: the data plane drains for ``drain_seconds``; a second SIGTERM cuts that short; then SIGKILL."""
        pid = self._pid
        log.info("stopping the data plane", pid=pid, drain_seconds=self.drain_seconds)
        self._signal(signal.SIGTERM)
        if not self._wait_gone(self.drain_seconds + 5):
            self._signal(signal.SIGTERM)
            if not self._wait_gone(5):
                self._signal(signal.SIGKILL)
                self._wait_gone(5)
        self.pid_path.unlink(missing_ok=True)
        self._pid = self._proc = None
        log.info("data plane stopped", pid=pid)

    def _wait_gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.1)
        return not self.running()
