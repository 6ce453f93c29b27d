"""The only place shaping touches the kernel: ``tc -batch`` to write, ``tc -j`` and netlink to read.

Everything runs in the network namespace of the calling thread (child processes inherit it, netlink sockets are
opened in it), so the agent shapes its own namespace and the lab tests shape theirs, never the root namespace.

``tc -j class show`` does not emit JSON for HTB classes in iproute2 6.1, so classes are read over netlink
(pyroute2), which also gives exact rates instead of tc's rounded "3125Kbit".
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from arctic.logs import get_logger

from .qos_model import QDISC_MAJOR, ROOT_HANDLE, QosError
from .qos_render import BFIFO, HtbClass, InstalledLeaf, LeafQdisc

log = get_logger("qosmgr")

TC_TIMEOUT = 20.0
TC_H_ROOT = 0xFFFFFFFF
FAIR_LEAVES = ("fq_codel", "fq", "sfq")  # best first
_KCONFIG = {"fq_codel": "CONFIG_NET_SCH_FQ_CODEL", "fq": "CONFIG_NET_SCH_FQ", "sfq": "CONFIG_NET_SCH_SFQ"}


def _run(argv: list[str], *, input: str | None = None, timeout: float = TC_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise QosError(f"{argv[0]!r} is not installed; bandwidth limits need iproute2 (tc, ip)") from None
    except subprocess.TimeoutExpired:
        raise QosError(f"{' '.join(argv[:3])} did not finish within {timeout:.0f}s", temporary=True) from None


def is_ours(qdisc: dict[str, Any] | None) -> bool:
    """Arctic's root is recognised by its handle (and kind): we never adopt anything else."""
    return bool(qdisc) and qdisc.get("kind") == "htb" and qdisc.get("handle") == ROOT_HANDLE


def is_default(qdisc: dict[str, Any] | None) -> bool:
    """The kernel's own root (handle 0:, e.g. noqueue, pfifo_fast, mq, fq_codel by default_qdisc) may be replaced."""
    return bool(qdisc) and (qdisc.get("handle") == "0:" or qdisc.get("kind") == "noqueue")


def describe(qdisc: dict[str, Any]) -> str:
    return f"{qdisc.get('kind', '?')} {qdisc.get('handle', '?')}"


class TcKernel:
    """Reads and writes qdiscs and classes with tc and netlink, in the caller's network namespace."""

    def __init__(self, tc: str = "tc", ip: str = "ip") -> None:
        self.tc, self.ip = tc, ip

    # --- reading -------------------------------------------------------------------------------------------------

    def root_qdiscs(self) -> dict[str, dict[str, Any]]:
        """Every interface's root qdisc, by interface name."""
        proc = _run([self.tc, "-j", "qdisc", "show"])
        if proc.returncode != 0:
            raise QosError(f"cannot list qdiscs: {proc.stderr.strip()}", temporary=True)
        return {q["dev"]: q for q in json.loads(proc.stdout or "[]") if q.get("root") and "dev" in q}

    def leaf_qdiscs(self, interface: str) -> dict[int, InstalledLeaf]:
        """Child qdiscs of Arctic classes on ``interface``, by the minor of the class they hang under."""
        proc = _run([self.tc, "-j", "qdisc", "show", "dev", interface])
        if proc.returncode != 0:
            raise QosError(f"cannot list qdiscs of {interface}: {proc.stderr.strip()}", temporary=True)
        leaves = {}
        for q in json.loads(proc.stdout or "[]"):
            major, _, minor = str(q.get("parent", "")).partition(":")
            if major == f"{QDISC_MAJOR:x}" and minor:
                leaves[int(minor, 16)] = InstalledLeaf(q.get("kind", ""), q.get("options") or {})
        return leaves

    def htb_classes(self, interface: str) -> list[HtbClass]:
        """Arctic's HTB classes on ``interface`` with exact rates (bit/s), read over netlink."""
        classes = []
        for msg in self._arctic_classes(interface):
            handle, parent = msg["handle"], msg["parent"]
            opts = msg.get_attr("TCA_OPTIONS")
            parms = opts.get_attr("TCA_HTB_PARMS") if opts else None
            if parms is None:
                continue
            rate = opts.get_attr("TCA_HTB_RATE64") or parms["rate"]
            ceil = opts.get_attr("TCA_HTB_CEIL64") or parms["ceil"]
            parent_minor = None if parent == TC_H_ROOT or parent == QDISC_MAJOR << 16 else parent & 0xFFFF
            classes.append(HtbClass(handle & 0xFFFF, parent_minor, rate * 8, ceil * 8, 0, parms["quantum"],
                                    parms["prio"] if parent_minor is not None else None))
        return classes

    def class_drops(self, interface: str) -> dict[int, int]:
        """Packets each Arctic HTB class on ``interface`` dropped (its leaf queue was full), by class minor.

        Read over netlink: ``tc -j class show`` prints no JSON for classes in the iproute2 we run on."""
        return {cls["handle"] & 0xFFFF: cls.get_attr("TCA_STATS")["drop"] for cls in self._arctic_classes(interface)
                if cls.get_attr("TCA_STATS") is not None}

    def _arctic_classes(self, interface: str) -> list:
        from pyroute2 import IPRoute  # imported lazily: unit tests and the renderer never need netlink

        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=interface)
                if not index:
                    raise QosError(f"interface {interface} does not exist")
                return [msg for msg in ipr.get_classes(index=index[0])
                        if msg.get_attr("TCA_KIND") == "htb" and msg["handle"] >> 16 == QDISC_MAJOR]
        except QosError:
            raise
        except Exception as err:  # pyroute2's NetlinkError and socket errors: a netlink call that may pass
            raise QosError(f"cannot read the tc classes of {interface}: {err}", temporary=True) from err

    # --- writing -------------------------------------------------------------------------------------------------

    def run_batch(self, text: str) -> None:
        """Feed rendered text to ``tc -batch -``; tc stops at the first failing line, whose error we raise."""
        proc = _run([self.tc, "-batch", "-"], input=text)
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
            raise QosError(f"tc -batch failed: {detail}", temporary=True)

    def delete_root(self, interface: str) -> None:
        proc = _run([self.tc, "qdisc", "del", "dev", interface, "root"])
        if proc.returncode != 0:
            raise QosError(f"cannot remove Arctic's root qdisc from {interface}: {proc.stderr.strip()}",
                           temporary=True)

    def route_dev(self, address: str) -> str:
        """The interface that routes ``address`` (the other peer's tunnel address) in this namespace."""
        proc = _run([self.ip, "-j", "route", "get", address])
        if proc.returncode != 0:
            raise QosError(f"no route to peer address {address}: {proc.stderr.strip()}")
        routes = json.loads(proc.stdout or "[]")
        if not routes or "dev" not in routes[0]:
            raise QosError(f"no route to peer address {address}")
        return routes[0]["dev"]


# --- which leaf qdisc this kernel offers ---------------------------------------------------------------------------

_leaf_lock = threading.Lock()
_leaf_cache: LeafQdisc | None = None


def _probe_kind(kind: str) -> bool | None:
    """Try the qdisc on ``lo`` of a throw-away namespace: True/False, or None if the probe itself cannot run."""
    if shutil.which("unshare") is None:
        return None
    try:
        proc = subprocess.run(["unshare", "--net", "--", "tc", "qdisc", "add", "dev", "lo", "root", kind],
                              capture_output=True, text=True, timeout=TC_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:
        return True
    return False if "unknown" in proc.stderr.lower() else None


def _kernel_config() -> str | None:
    try:
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    except OSError:
        return None


def _from_config(kind: str, config: str | None) -> bool:
    if config is None:
        return False
    key = _KCONFIG[kind]
    return f"{key}=y" in config or f"{key}=m" in config


def detect_leaf_qdisc() -> LeafQdisc:
    """The best fair-queuing leaf this kernel has (fq_codel > fq > sfq), else a bounded ``bfifo``; logged once."""
    global _leaf_cache
    with _leaf_lock:
        if _leaf_cache is not None:
            return _leaf_cache
        config: str | None = None
        config_read = False
        chosen = BFIFO
        for kind in FAIR_LEAVES:
            found = _probe_kind(kind)
            if found is None:
                if not config_read:
                    config, config_read = _kernel_config(), True
                found = _from_config(kind, config)
            if found:
                chosen = LeafQdisc(kind)
                break
        if chosen is BFIFO:
            log.warning("no fair-queuing qdisc in this kernel (fq_codel, fq, sfq); flow fairness comes from the "
                        "per-connection slot classes, each with a byte-bounded bfifo", leaf="bfifo")
        else:
            log.info(f"flow slots use {chosen.kind} leaves", leaf=chosen.kind)
        _leaf_cache = chosen
        return chosen
