"""Low-level namespace plumbing: commands, ownership markers, in-namespace threads and process reaping.

Ownership is explicit: every namespace the harness creates gets a marker ``/run/arctic-lab/<ns>.owner`` naming the
owning process (pid + kernel start time, so a recycled pid is not mistaken for the owner). Stale clean-up only
ever removes namespaces that carry such a marker *and* whose owner is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from arctic.procinfo import process_start_time

NETNS_DIR = Path("/run/netns")
MARKER_DIR = Path("/run/arctic-lab")
CLONE_NEWNET = 0x40000000
DEFAULT_TIMEOUT = 30.0


class LabCommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError its message includes stderr, which is what explains it."""

    def __str__(self) -> str:
        cmd = " ".join(map(str, self.cmd)) if isinstance(self.cmd, list | tuple) else str(self.cmd)
        err = (self.stderr or "").strip()
        return f"command {cmd!r} exited with {self.returncode}" + (f": {err}" if err else "")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


def ns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def list_namespaces() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


# --- ownership markers -----------------------------------------------------------------------------------------

def write_marker(ns: str, pid: int | None = None) -> Path:
    pid = os.getpid() if pid is None else pid
    MARKER_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = MARKER_DIR / f"{ns}.owner"
    path.write_text(json.dumps({"ns": ns, "pid": pid, "start_time": process_start_time(pid),
                                "created": time.time()}) + "\n")
    return path


def remove_marker(ns: str) -> None:
    (MARKER_DIR / f"{ns}.owner").unlink(missing_ok=True)


def owner_alive(marker: Path) -> bool:
    """True unless the marker proves its owner is gone; an unreadable marker counts as alive (leave it be)."""
    try:
        data = json.loads(marker.read_text())
        pid, started = int(data["pid"]), data["start_time"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    now = process_start_time(pid)
    return now is not None and now == started


# --- processes -------------------------------------------------------------------------------------------------

def is_dead(pid: int) -> bool:
    """No such process, or only a zombie waiting for a reaper that is not us."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def terminate(procs: Sequence[subprocess.Popen], *, grace: float = 3.0) -> None:
    """SIGTERM each live process (its whole group when it leads one), SIGKILL whatever is left after ``grace``.

    Only unreaped children are signalled: until we reap them their pid (and the group id they lead) cannot be
    recycled, so the signal cannot reach a stranger.
    """
    live = [(p, os.getpgid(p.pid) == p.pid) for p in procs if p.poll() is None]
    for proc, group in live:
        _signal(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    for proc, group in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, group)
            proc.wait(timeout=grace)


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def kill_namespace_processes(ns: str) -> list[int]:
    """SIGKILL every process still inside namespace ``ns`` (one the harness created), by pidfd.

    The pidfd pins the process, and the namespace is re-checked through it, so a pid recycled between listing
    and killing is never signalled.
    """
    try:
        ns_ino = os.stat(NETNS_DIR / ns).st_ino
    except FileNotFoundError:
        return []
    listed = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    killed = []
    for pid in (int(p) for p in listed if p.isdigit()):
        if pid == os.getpid():
            continue
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == ns_ino:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
        finally:
            os.close(fd)
    return killed


def delete_namespace(ns: str) -> None:
    if ns_exists(ns):
        kill_namespace_processes(ns)
        run(["ip", "netns", "delete", ns])
    remove_marker(ns)


def cleanup_stale(prefix: str) -> list[str]:
    """Remove leftovers of earlier runs of this harness, and nothing else.

    A namespace goes only if its name starts with ``prefix`` AND it has an owner marker written by this harness
    AND that owner process is dead. Returns the names removed.
    """
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix or ""):
        raise ValueError(f"prefix {prefix!r} must be 1-8 characters of a-z0-9 starting with a letter")
    if not MARKER_DIR.is_dir():
        return []
    removed = []
    for marker in sorted(MARKER_DIR.glob(f"{prefix}*.owner")):
        ns = marker.name.removesuffix(".owner")
        if not ns.startswith(prefix) or owner_alive(marker):
            continue
        delete_namespace(ns)
        removed.append(ns)
    return removed


# --- running Python code inside a namespace --------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class NamespaceWorker:
    """One daemon thread that has joined a network namespace and runs callables there.

    setns(CLONE_NEWNET) affects only the calling thread, so sockets opened by functions run here live in the lab
    namespace while the rest of the process (pytest itself) stays in the root namespace.
    """

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._jobs: queue.Queue[tuple[Callable, tuple, dict, Future] | None] = queue.Queue()
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._loop, args=(ready,), name=f"netns-{ns}", daemon=True)
        self._thread.start()
        ready.result(timeout=10)

    def _loop(self, ready: Future) -> None:
        try:
            _setns(NETNS_DIR / self.ns)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, args, kwargs, fut = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    fut.set_exception(exc)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = DEFAULT_TIMEOUT, **kwargs: Any) -> Any:
        if threading.current_thread() is self._thread:  # nested call from code already running here
            return fn(*args, **kwargs)
        if not self._thread.is_alive():
            raise RuntimeError(f"the worker for namespace {self.ns} has stopped (lab torn down?)")
        fut: Future = Future()
        self._jobs.put((fn, args, kwargs, fut))
        return fut.result(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to finish; False if it is still busy (it then pins the namespace until it returns)."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
