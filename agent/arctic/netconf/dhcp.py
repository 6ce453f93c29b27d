"""Supervises one DHCP client process per DHCP-addressed service interface.

The clients run in their own session, so they outlive an agent restart (restarting the control plane must not
drop leases). Each client's pid and kernel start time are recorded in ``run_dir``; a process is signalled only if
it is still the one we started (same start time, our module and interface on its command line), so a recycled
pid is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from arctic.procinfo import is_same_process, process_start_time

MODULE = "arctic.netconf.dhcp_client"


class DhcpSupervisor:
    def __init__(self, run_dir: Path, *, python: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.python = python or sys.executable
        self._children: dict[str, subprocess.Popen] = {}

    def _pidfile(self, ifname: str) -> Path:
        return self.run_dir / f"{ifname}.pid.json"

    def _recorded(self, ifname: str) -> dict | None:
        try:
            return json.loads(self._pidfile(ifname).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self, ifname: str) -> int | None:
        """The pid of the live client we started for ``ifname``, or None."""
        child = self._children.get(ifname)
        if child is not None and child.poll() is not None:
            self._children.pop(ifname, None)
        rec = self._recorded(ifname)
        if not rec:
            return None
        pid = int(rec["pid"])
        return pid if is_same_process(pid, rec.get("start_time"), MODULE, ifname) else None

    def running(self, ifname: str) -> bool:
        return self.pid(ifname) is not None

    def start(self, ifname: str) -> int:
        pid = self.pid(ifname)
        if pid is not None:
            return pid
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / f"{ifname}.log").open("ab") as out:
            proc = subprocess.Popen([self.python, "-m", MODULE, ifname], cwd=self.run_dir, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._children[ifname] = proc
        self._pidfile(ifname).write_text(json.dumps({"pid": proc.pid, "start_time": process_start_time(proc.pid),
                                                     "ifname": ifname}))
        return proc.pid

    def stop(self, ifname: str, timeout: float = 5.0) -> bool:
        """SIGTERM (the client releases its lease), SIGKILL after ``timeout``. True if a client was stopped."""
        pid = self.pid(ifname)
        stopped = False
        if pid is not None:
            self._signal(pid, signal.SIGTERM)
            if not self._wait(ifname, pid, timeout):
                self._signal(pid, signal.SIGKILL)
                self._wait(ifname, pid, 2.0)
            stopped = True
        self._children.pop(ifname, None)
        self._pidfile(ifname).unlink(missing_ok=True)
        return stopped

    def stop_all(self) -> None:
        for pidfile in sorted(self.run_dir.glob("*.pid.json")):
            self.stop(pidfile.name.removesuffix(".pid.json"))

    def _signal(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait(self, ifname: str, pid: int, timeout: float) -> bool:
        child = self._children.get(ifname)
        if child is not None and child.pid == pid:
            try:
                child.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process_start_time(pid) is None:
                return True
            time.sleep(0.05)
        return False
