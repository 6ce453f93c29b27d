"""Lab, Host and Segment: network namespaces joined by veth pairs, safe by construction.

* Every name is ``f"{prefix}{runid}-{role}"`` with a fresh 6-hex-digit run id, so runs never collide.
* Veth pairs are created *inside* a lab namespace with their peer placed straight into another lab namespace,
  so no interface ever appears in the root namespace, even for a moment.
* Addresses, routes and gateways are checked against the lab ranges (``safety.py``) before anything changes.
* Teardown is guaranteed (context manager, ``atexit`` and a SIGTERM handler) and touches only what this Lab
  recorded creating: its processes by pid, its namespaces by name.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import netns
from .netns import DEFAULT_TIMEOUT, NamespaceWorker, cleanup_stale
from .safety import check_ifname, check_role, lab_address, lab_interface, lab_network

HOST_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv6.conf.default.forwarding=1",
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv6.conf.default.accept_dad=0",  # lab addresses are unique by construction; DAD only adds delay
)
SEGMENT_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
BRIDGE = "br0"


class LabTeardownError(RuntimeError):
    """Some part of the teardown failed; the message lists each failure."""


class Host:
    """A lab host: one network namespace with lo up, forwarding on, rp_filter off and no default route."""

    def __init__(self, lab: Lab, role: str, name: str) -> None:
        self.lab, self.role, self.name = lab, role, name
        self.interfaces: dict[str, list[str]] = {}  # ifname -> addresses (CIDR text) the harness put there
        self.processes: list[subprocess.Popen] = []
        self._worker: NamespaceWorker | None = None
        self._worker_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Host({self.role!r}, ns={self.name!r})"

    def command(self, *argv: Any) -> list[str]:
        """argv wrapped to run inside this host's namespace (for tools that take a command line)."""
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv: Any, check: bool = True, timeout: float = DEFAULT_TIMEOUT,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside the namespace; output is captured as text."""
        return netns.run(self.command(*argv), check=check, timeout=timeout, input=input)

    def ip(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        return netns.run(["ip", "-n", self.name, *map(str, args)], check=check)

    def popen(self, *argv: Any, start_new_session: bool = True, **kwargs: Any) -> subprocess.Popen:
        """Start a tracked background process in the namespace; teardown ends it (and its group) by pid."""
        proc = subprocess.Popen(self.command(*argv), start_new_session=start_new_session, **kwargs)
        self.processes.append(proc)
        return proc

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = DEFAULT_TIMEOUT,
             **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in this host's worker thread, which lives in the host's namespace.

        Sockets opened by ``fn`` belong to the lab namespace, which is how root-namespace test code talks to lab
        services without ever sending to a lab address itself. Calls to one host run one at a time.
        """
        with self._worker_lock:
            if self._worker is None:
                self.lab._check_open()
                self._worker = NamespaceWorker(self.name)
        return self._worker.call(fn, *args, timeout=timeout, **kwargs)

    def addr(self, ifname: str, *cidrs: str) -> None:
        """Add lab addresses to one of this host's interfaces (all are checked before any is added)."""
        parsed = [lab_interface(c) for c in cidrs]
        for iface in parsed:
            extra = ["nodad"] if iface.version == 6 else []
            self.ip("addr", "add", iface.with_prefixlen, "dev", ifname, *extra)
            self.interfaces.setdefault(ifname, []).append(iface.with_prefixlen)

    def route(self, dest: str, via: str | None = None, dev: str | None = None, table: int | None = None) -> None:
        """Add (or replace) a route to a lab network; ``via`` must be a lab address.

        ``table`` puts it in a policy-routing table instead of main (the WAN emulator's namespace steers each
        side's traffic into its TUN device that way).
        """
        net = lab_network(dest)
        args = ["route", "replace", str(net)]
        if via is not None:
            args += ["via", str(lab_address(via))]
        if dev is not None:
            args += ["dev", check_ifname(dev)]
        if via is None and dev is None:
            raise ValueError(f"route to {dest}: give via= or dev=")
        if table is not None:
            if not 1 <= table < 2**31 or table in (253, 254, 255):
                raise ValueError(f"table {table} must be a custom table id (not default/main/local)")
            args += ["table", str(table)]
        self.ip(*args)

    def add_tun(self, ifname: str, *, mtu: int = 1500, txqueuelen: int = 1000) -> str:
        """A persistent TUN device (layer 3, no packet-info header) in this namespace, up; returns its name.

        For user-space data paths such as the WAN emulator (``harness.wan``): being persistent, the device and the
        routes through it outlive the process that serves it, and it goes away with the namespace.
        """
        if ifname in self.interfaces or ifname == "lo":
            raise ValueError(f"{self} already has an interface {ifname!r}")
        self.ip("tuntap", "add", "dev", check_ifname(ifname), "mode", "tun")
        self.interfaces[ifname] = []
        self.ip("link", "set", ifname, "mtu", int(mtu), "txqueuelen", int(txqueuelen), "up")
        return ifname

    def unroute(self, dest: str) -> None:
        self.ip("route", "del", str(lab_network(dest)))

    def wait_carrier(self, ifname: str, timeout: float = 5.0) -> None:
        """Wait until ``ifname`` is operationally up: before that IPv6 is not set up and first packets get lost."""
        deadline = time.monotonic() + timeout
        while " state UP " not in self.ip("-o", "link", "show", "dev", ifname).stdout:  # operstate, set by linkwatch
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self}: {ifname} has no carrier after {timeout:.0f}s")
            time.sleep(0.02)

    def address(self, ifname: str | None = None, version: int = 4) -> str:
        """The first address (without prefix length) the harness gave this host, optionally on one interface."""
        for name, addrs in self.interfaces.items():
            for a in addrs:
                if (ifname is None or name == ifname) and (":" in a) == (version == 6):
                    return a.split("/")[0]
        raise LookupError(f"{self} has no IPv{version} address" + (f" on {ifname}" if ifname else ""))

    def _stop_worker(self) -> bool:
        with self._worker_lock:
            worker, self._worker = self._worker, None
        return worker.stop() if worker else True


class Segment:
    """A layer-2 segment: a bridge ``br0`` in a namespace of its own, so it never sits in the root namespace."""

    def __init__(self, lab: Lab, role: str, name: str) -> None:
        self.lab, self.role, self.name = lab, role, name
        self.bridge = BRIDGE
        self.ports: dict[str, Host] = {}

    def __repr__(self) -> str:
        return f"Segment({self.role!r}, ns={self.name!r})"

    def _port_name(self, host: Host) -> str:
        for i in range(100):
            name = (f"p-{host.role}" if i == 0 else f"p{i}-{host.role}")[:15]
            if name not in self.ports:
                return name
        raise ValueError(f"{self}: too many ports for {host}")


class Lab:
    """A throw-away set of namespaces; use as a context manager (teardown also runs at exit and on SIGTERM)."""

    def __init__(self, prefix: str = "arc", *, clean_stale: bool = True, keep_run_dir: bool | None = None) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", prefix or ""):
            raise ValueError(f"prefix {prefix!r} must be 1-6 characters of a-z0-9 starting with a letter")
        if os.geteuid() != 0:
            raise PermissionError("the lab harness needs root (it creates network namespaces)")
        self.prefix, self.runid = prefix, secrets.token_hex(3)
        self.tag = f"{prefix}{self.runid}"
        self.owner_pid = os.getpid()
        self.hosts: dict[str, Host] = {}
        self.segments: dict[str, Segment] = {}
        self.namespaces: list[str] = []  # everything this lab created, in creation order
        self.keep_run_dir = os.environ.get("ARCTIC_LAB_KEEP") == "1" if keep_run_dir is None else keep_run_dir
        self._lock = threading.RLock()
        self._closed = False
        if clean_stale:
            cleanup_stale(prefix)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"arctic-lab-{self.tag}-"))
        _register(self)

    def __repr__(self) -> str:
        return f"Lab({self.tag!r}, hosts={list(self.hosts)}, segments={list(self.segments)})"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except LabTeardownError as err:
            if exc_type is None:
                raise
            print(f"lab teardown after an error also failed: {err}", file=sys.stderr)

    def name(self, role: str) -> str:
        return f"{self.tag}-{check_role(role)}"

    # --- building ------------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self} is already torn down")

    def _new_namespace(self, role: str, sysctls: tuple[str, ...]) -> str:
        with self._lock:
            self._check_open()
            if role in self.hosts or role in self.segments:
                raise ValueError(f"role {role!r} is already used in this lab")
            ns = self.name(role)
            if netns.ns_exists(ns):
                raise RuntimeError(f"namespace {ns} already exists and is not this lab's; refusing to touch it")
            netns.write_marker(ns)  # before the namespace exists: if we die mid-way, cleanup_stale finds it
            try:
                netns.run(["ip", "netns", "add", ns])
            except Exception:
                netns.remove_marker(ns)
                raise
            self.namespaces.append(ns)
        netns.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        netns.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *sysctls])
        return ns

    def host(self, role: str) -> Host:
        host = Host(self, role, self._new_namespace(role, HOST_SYSCTLS))
        self.hosts[role] = host
        return host

    def segment(self, role: str) -> Segment:
        seg = Segment(self, role, self._new_namespace(role, SEGMENT_SYSCTLS))
        netns.run(["ip", "-n", seg.name, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
                   "mcast_snooping", "0"])
        netns.run(["ip", "-n", seg.name, "link", "set", BRIDGE, "up"])
        self.segments[role] = seg
        return seg

    def _own(self, *things: Host | Segment) -> None:
        for thing in things:
            if thing.lab is not self:
                raise ValueError(f"{thing} belongs to another lab")
        self._check_open()

    def _free_ifname(self, host: Host, ifname: str) -> str:
        check_ifname(ifname)
        if ifname in host.interfaces or ifname == "lo":
            raise ValueError(f"{host} already has an interface {ifname!r}; pass ifname= to choose another")
        return ifname

    def attach(self, host: Host, segment: Segment, *addresses: str, ifname: str | None = None) -> str:
        """Plug ``host`` into ``segment`` with a veth pair and give the host end ``addresses``; returns its name."""
        self._own(host, segment)
        ifname = self._free_ifname(host, ifname or f"eth-{segment.role}"[:15])
        for a in addresses:
            lab_interface(a)  # refuse before changing anything
        port = segment._port_name(host)
        host.ip("link", "add", ifname, "type", "veth", "peer", "name", port, "netns", segment.name)
        segment.ports[port] = host
        host.interfaces[ifname] = []
        netns.run(["ip", "-n", segment.name, "link", "set", port, "master", BRIDGE, "up"])
        host.addr(ifname, *addresses)
        host.ip("link", "set", ifname, "up")
        host.wait_carrier(ifname)
        return ifname

    def wire(self, a: Host, b: Host, addr_a: str | None = None, addr_b: str | None = None, *,
             ifname_a: str | None = None, ifname_b: str | None = None) -> tuple[str, str]:
        """A point-to-point veth pair between two hosts; returns (interface on a, interface on b)."""
        self._own(a, b)
        if a is b:
            raise ValueError(f"cannot wire {a} to itself")
        if_a = self._free_ifname(a, ifname_a or f"to-{b.role}"[:15])
        if_b = self._free_ifname(b, ifname_b or f"to-{a.role}"[:15])
        for addr in (addr_a, addr_b):
            if addr is not None:
                lab_interface(addr)
        a.ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", b.name)
        a.interfaces[if_a], b.interfaces[if_b] = [], []
        for host, ifname, addr in ((a, if_a, addr_a), (b, if_b, addr_b)):
            if addr is not None:
                host.addr(ifname, addr)
            host.ip("link", "set", ifname, "up")
        a.wait_carrier(if_a)
        b.wait_carrier(if_b)
        return if_a, if_b

    def default_via(self, host: Host, gateway: str) -> None:
        """The only way a lab host gets a default route, and only towards a lab gateway."""
        self._own(host)
        gw = lab_address(gateway)
        host.ip("-6" if gw.version == 6 else "-4", "route", "replace", "default", "via", str(gw))

    # --- teardown -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop this lab's processes and threads, then delete exactly the namespaces it created. Idempotent."""
        with self._lock:
            if self._closed or os.getpid() != self.owner_pid:
                return
            self._closed = True
        errors: list[str] = []
        try:
            netns.terminate([p for h in self.hosts.values() for p in h.processes])
        except Exception as exc:  # keep going: the namespaces must go regardless
            errors.append(f"terminating processes: {exc}")
        for host in self.hosts.values():
            if not host._stop_worker():
                errors.append(f"{host}: a host.call() is still running and pins the namespace")
        for ns in reversed(self.namespaces):
            try:
                netns.delete_namespace(ns)
            except Exception as exc:
                errors.append(f"deleting {ns}: {exc}")
        if self.keep_run_dir:
            print(f"lab {self.tag}: run dir kept at {self.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        _unregister(self)
        if errors:
            raise LabTeardownError("; ".join(errors))


# --- teardown of every live lab at exit and on SIGTERM -----------------------------------------------------------

_live: list[Lab] = []
_registry_lock = threading.RLock()
_hooks_installed = False


def _register(lab: Lab) -> None:
    global _hooks_installed
    with _registry_lock:
        _live.append(lab)
        if _hooks_installed:
            return
        _hooks_installed = True
        atexit.register(close_all)
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, lambda signum, frame: _on_sigterm(previous, signum, frame))


def _unregister(lab: Lab) -> None:
    with _registry_lock:
        if lab in _live:
            _live.remove(lab)


def close_all() -> None:
    """Tear down every lab this process still owns (errors are reported, not raised: we are exiting)."""
    with _registry_lock:
        labs = list(reversed(_live))
    for lab in labs:
        try:
            lab.close()
        except Exception as exc:
            print(f"lab {lab.tag}: teardown failed: {exc}", file=sys.stderr)


def _on_sigterm(previous: Any, signum: int, frame: Any) -> None:
    close_all()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:  # default disposition: die of SIGTERM, as we would have without the harness
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
