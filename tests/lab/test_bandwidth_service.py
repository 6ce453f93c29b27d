"""Bandwidth limits hold per service, in both directions, through two real agents, set with the real CLI.

Topology ``harness.transit``: client ``cl`` 10.0.0.2 -> agent-a 198.18.0.1 ==tunnel==> agent-b 198.18.0.2 ->
s1 192.168.100.2 / s2 192.168.200.2. Limits are set by the operator's own commands, ``arctic services create
--bandwidth-limit 50`` and ``arctic services update ID --bandwidth-limit 20|0``, run inside the ``ctl`` host; the
traffic is iperf3 from ``cl`` to an iperf3 server on ``s1``, carried by Arctic (agent-a has no route to the
server LANs). ``-R`` measures target->source, shaped by agent-b; the default direction is shaped by agent-a.

Bounds are loose (2 shared vCPUs): a 50 Mbit/s service must measure 40-55 Mbit/s of goodput (payload; the limit
counts frame bytes, goodput is ~95 % of them). A measurement that misses its bounds is repeated, at most three
windows in all: a broken limit never recovers, a one-off hiccup of TCP on a busy box does. Each iperf3 run lasts at
most 6 s. Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness import Host, Lab, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair, wait_until

pytestmark = pytest.mark.lab

S1, S2 = "192.168.100.2", "192.168.200.2"
IPERF_PORT, GREET_PORT = 5201, 9000
ATTEMPTS = 3
LIMIT, UPDATED = 50, 20
IN_BOUNDS = (40.0, 55.0)  # goodput of the 50 Mbit/s service
UPDATED_BOUNDS = (15.0, 22.0)  # goodput after the live update to 20 Mbit/s
LIFTED_MIN = 150.0  # "unlimited": well above any limit in this file (unshaped Arctic carries Gbit/s here)
ARCTIC = str(Path(sys.executable).parent / "arctic")

T = TypeVar("T")


# --- measuring ----------------------------------------------------------------------------------------------

@dataclass
class Iperf:
    """One finished iperf3 run: goodput at the receiver in total and per stream (Mbit/s), or why it failed."""

    total: float = 0.0
    streams: list[float] = field(default_factory=list)
    error: str | None = None


def iperf(client: Host, server: str, *, seconds: int = 3, reverse: bool = False, parallel: int = 1) -> Iperf:
    """iperf3 from ``client`` to ``server``: 1 s omitted (TCP start-up) + ``seconds`` measured, receiver figures."""
    argv = ["iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", str(seconds), "-O", "1", "-P", str(parallel), "-J"]
    proc = client.run(*argv, *(["-R"] if reverse else []), check=False, timeout=seconds + 25)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return Iperf(error=f"iperf3 exited {proc.returncode}: {proc.stderr.strip() or proc.stdout[-300:]}")
    if doc.get("error") or proc.returncode:
        return Iperf(error=f"iperf3: {doc.get('error') or proc.returncode}")
    end = doc["end"]
    return Iperf(end["sum_received"]["bits_per_second"] / 1e6,
                 [s["receiver"]["bits_per_second"] / 1e6 for s in end["streams"]])


def settled(measure: Callable[[], T], ok: Callable[[T], bool], what: str) -> T:
    """The first of at most ATTEMPTS measurements that passes ``ok`` (else the last one), each printed."""
    for attempt in range(1, ATTEMPTS + 1):
        result = measure()
        print(f"{what}, window {attempt}: {result}")
        if ok(result):
            break
    return result


def within(lo: float, hi: float) -> Callable[[Iperf], bool]:
    return lambda r: r.error is None and lo <= r.total <= hi


_REPORT = re.compile(r"^\[\s*\d+\]\s+([\d.]+)-([\d.]+)\s+sec\s+[\d.]+ \w?Bytes\s+([\d.]+) ([KMG]?)bits/sec\s*$")
_UNIT = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}


class LiveIperf:
    """A running ``iperf3 -R`` whose 0.25 s receiver reports are stamped with when they arrived.

    One TCP connection carries the whole run, so rates measured before and after a live limit change are rates of
    the same connection. Reports map onto this process's clock as ``origin + start .. origin + end``.
    """

    INTERVAL = 0.25

    def __init__(self, client: Host, server: str, seconds: int) -> None:
        self.reports: list[tuple[float, float, float, float]] = []  # (arrived, start, end, Mbit/s)
        self.lines: list[str] = []
        self.proc = client.popen("iperf3", "-c", server, "-p", str(IPERF_PORT), "-R", "-t", str(seconds),
                                 "-i", str(self.INTERVAL), "--forceflush", stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            self.lines.append(line.rstrip())
            if match := _REPORT.match(line.strip()):
                start, end, value, unit = match.groups()
                self.reports.append((now, float(start), float(end), float(value) * _UNIT[unit]))

    @property
    def origin(self) -> float:
        """When the test started on this clock (the earliest report arrival minus its end offset)."""
        return min(arrived - end for arrived, _, end, _ in self.reports)

    def wait_started(self, timeout: float = 10.0) -> float:
        wait_until(lambda: self.reports or self.proc.poll() is not None, timeout=timeout, interval=0.02,
                   what="iperf3's first report")
        if not self.reports:
            raise AssertionError("iperf3 never reported:\n" + "\n".join(self.lines))
        return self.origin

    def finish(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def rate(self, start: float, end: float) -> float:
        """Mean goodput (Mbit/s) of the reports lying entirely within [start, end] on this clock (0 if none)."""
        origin = self.origin
        inside = [mbps for _, s, e, mbps in self.reports if origin + s >= start - 0.01 and origin + e <= end + 0.01]
        return sum(inside) / len(inside) if inside else 0.0


# --- the lab: two agents, servers, the CLI ------------------------------------------------------------------

def _greeter(host: Host, ip: str) -> socket.socket:
    """A server that greets every connection with b"hi": a connection that reads it really crossed Arctic
    (agent-a accepts intercepted connections itself, so a bare connect proves nothing)."""
    sock = host.call(socket.create_server, (ip, GREET_PORT), backlog=64)

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.sendall(b"hi")

    threading.Thread(target=loop, daemon=True).start()
    return sock


def _greeted(ip: str) -> bool:
    try:
        with socket.create_connection((ip, GREET_PORT), timeout=2) as sock:
            return sock.recv(2) == b"hi"
    except OSError:
        return False


@dataclass
class Shaped:
    """What one agent's kernel holds for one service: its class block on the interface towards the other peer."""

    classes: list[str]  # "class htb 61:xx ..." lines of the block
    leaves: list[str]  # "qdisc ... parent 61:xx" lines under the block
    root: bool  # Arctic's root 61: is on the interface

    @property
    def rate(self) -> str | None:
        """The service class's rate as tc prints it ("50Mbit"), None without a class."""
        match = re.search(r" root rate (\S+) ", self.classes[0]) if self.classes else None
        return match.group(1) if match else None


@dataclass
class BandwidthLab:
    lab: Lab
    t: Any  # harness.Transit
    pair: ArcticPair
    greeters: list[socket.socket]

    def host(self, name: str) -> Host:
        return self.t.agent_a if name == "a" else self.t.agent_b

    def cli(self, *args: str, on: str = "a") -> str:
        """The real ``arctic`` command in the ctl namespace, talking to agent-``on`` (exit status checked)."""
        env = [f"ARCTIC_URL={self.pair.agents[on].url}", f"ARCTIC_TOKEN={self.pair.token(on)}",
               f"ARCTIC_CONFIG={self.lab.run_dir / 'cli' / 'config.yaml'}", "NO_COLOR=1"]
        proc = self.t.ctl.run("env", *env, ARCTIC, *args, check=False, timeout=60)
        assert proc.returncode == 0, f"arctic {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def create_limited(self, mbps: int, dest: str, transport: str = "tcp") -> str:
        """``arctic services create --bandwidth-limit`` + a destination route, ready to carry (both agents)."""
        out = self.cli("services", "create", "--target-peer", self.pair.peer_id("b"), "--bandwidth-limit", str(mbps),
                       "--transport", transport)
        sid = out.rsplit("ID=", 1)[1].split()[0]
        self.pair.add_routes(sid, {"dest_cidr": dest, "priority": 100})
        self.wait_carried(sid, dest)
        return sid

    def wait_carried(self, sid: str, dest: str) -> None:
        """Both data planes know the service and a connection through it reaches the server."""
        for name in ("a", "b"):
            wait_until(lambda name=name: any(s["id"] == sid for s in
                                             self.pair.dataplane_config(name).get("services", [])),
                       what=f"agent-{name}'s data plane to get {sid}")
        server = dest.rsplit(".", 1)[0] + ".2"
        wait_until(lambda: self.t.cl.call(_greeted, server), what=f"{server} reached through {sid}")

    def block(self, name: str, sid: str) -> int:
        """The service's class block (minor base) on agent-``name``, from the slot priorities it gave its data plane."""
        svc = next(s for s in self.pair.dataplane_config(name)["services"] if s["id"] == sid)
        return svc["so_priorities"][0] & 0xFFE0

    def core_dev(self, name: str) -> str:
        other = self.t.agent_b_ip if name == "a" else self.t.agent_a_ip
        return self.host(name).run("ip", "-o", "route", "get", other).stdout.split(" dev ")[1].split()[0]

    def shaped(self, name: str, base: int) -> Shaped:
        host, dev = self.host(name), self.core_dev(name)
        block = {f"61:{minor:x}" for minor in range(base, base + 32)}
        classes = [ln for ln in host.run("tc", "class", "show", "dev", dev).stdout.splitlines()
                   if ln.startswith("class htb ") and ln.split()[2] in block]
        qdiscs = host.run("tc", "qdisc", "show", "dev", dev).stdout.splitlines()
        leaves = [ln for ln in qdiscs if " parent " in ln and ln.split(" parent ")[1].split()[0] in block]
        return Shaped(sorted(classes, key=lambda ln: " root " not in ln), leaves,
                      any(ln.startswith("qdisc htb 61: root") for ln in qdiscs))

    def slot_bytes(self, name: str, base: int) -> dict[str, int]:
        """Bytes sent so far by each flow slot (HTB leaf) of a service's block on agent-``name``."""
        out = self.host(name).run("tc", "-s", "class", "show", "dev", self.core_dev(name)).stdout
        sent = {}
        for chunk in out.split("class htb ")[1:]:
            classid = chunk.split()[0]
            if int(classid.split(":")[1], 16) // 32 == base // 32 and " root " not in chunk.split("\n")[0]:
                sent[classid] = int(re.search(r"Sent (\d+) bytes", chunk).group(1))
        return sent


@pytest.fixture(scope="module")
def bw() -> Iterator[BandwidthLab]:
    with root_namespace_untouched("the bandwidth tests"), Lab(prefix="arbw") as lab:
        t = transit(lab)
        with ArcticPair.start(t) as pair:
            for host, ip in ((t.s1, S1), (t.s2, S2)):
                host.popen("iperf3", "-s", "-B", ip, "-p", str(IPERF_PORT), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            greeters = [_greeter(t.s1, S1), _greeter(t.s2, S2)]
            try:
                yield BandwidthLab(lab, t, pair, greeters)
            finally:
                for sock in greeters:
                    sock.close()


@pytest.fixture(autouse=True)
def clean(bw: BandwidthLab) -> Iterator[BandwidthLab]:
    """Every test ends with no service and no Arctic qdisc on either agent, even when it fails."""
    yield bw
    bw.pair.delete_services()
    for name in ("a", "b"):
        wait_until(lambda name=name: " 61: " not in bw.host(name).run("tc", "qdisc", "show").stdout
                   and not bw.pair.dataplane_config(name).get("services"), what=f"agent-{name} to be clean")


def wait_rate(bw: BandwidthLab, sid: str, bases: dict[str, int], rate: str | None) -> float:
    """Wait until both agents shape ``sid`` at ``rate`` ("20Mbit"; None = no class); returns when that was."""
    wait_until(lambda: all(bw.shaped(n, bases[n]).rate == rate for n in ("a", "b")), interval=0.05,
               what=f"both agents to shape {sid} at {rate or 'no limit'}")
    return time.monotonic()


def wire_rate(bw: BandwidthLab, name: str, base: int, *, reverse: bool, seconds: float = 2.0) -> float:
    """Mbit/s the service's HTB classes on agent-``name`` sent (frame bytes), sampled over ``seconds`` once an
    8 s iperf3 run has settled (at most 4 s after its start, so the window ends before the run does)."""
    run = bw.t.cl.popen("iperf3", "-c", S1, "-p", str(IPERF_PORT), "-t", "8", *(["-R"] if reverse else []),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def sample() -> tuple[int, float]:
        return sum(bw.slot_bytes(name, base).values()), time.monotonic()

    def steady(previous: list) -> tuple[int, float] | None:
        """The first sample after two 0.2 s windows that sent within 10 % of each other: start-up is over."""
        time.sleep(0.2)  # the length of a window (the rate in it is what is compared), not a wait
        previous.append(sample())
        if len(previous) < 3:
            return None
        (b0, t0), (b1, t1), (b2, t2) = previous[-3:]
        r1, r2 = (b1 - b0) / (t1 - t0), (b2 - b1) / (t2 - t1)
        return previous[-1] if r1 > 0 and abs(r2 - r1) <= 0.1 * r1 else None

    try:
        seen = [sample()]
        first, start = wait_until(lambda: steady(seen), timeout=4, interval=0, what="the iperf3 run to settle")
        time.sleep(seconds)  # the measurement window
        sent, end = sample()
    finally:
        run.wait(30)
    return (sent - first) * 8 / (end - start) / 1e6


# --- the limit, as the operator sets and sees it -----------------------------------------------------------

def shown_limit(services_get: str) -> str | None:
    """The value of the ``Bandwidth Limit`` line of ``arctic services get``."""
    match = re.search(r"^Bandwidth Limit:\s+(.*)$", services_get, re.M)
    return match[1] if match else None


def test_cli_create_update_and_remove_a_limit_shows_in_get_list_and_both_kernels(bw: BandwidthLab) -> None:
    sid = bw.create_limited(LIMIT, "192.168.100.0/24")
    bases = {n: bw.block(n, sid) for n in ("a", "b")}
    assert shown_limit(bw.cli("services", "get", sid)) == "50 Mbps (bandwidth_limit_mbps: 50)"
    assert re.search(rf"^{sid}\s.*\sQ$", bw.cli("services", "list"), re.M), "the Q flag marks a limited service"
    assert shown_limit(bw.cli("services", "get", sid, on="b")) == "50 Mbps (bandwidth_limit_mbps: 50)", \
        "the target peer (a replica) shows the limit too"
    for name in ("a", "b"):
        shaped = bw.shaped(name, bases[name])
        assert shaped.rate == "50Mbit" and len(shaped.classes) == 17 and len(shaped.leaves) == 16, shaped

    bw.cli("services", "update", sid, "--bandwidth-limit", str(UPDATED))
    wait_rate(bw, sid, bases, "20Mbit")
    assert shown_limit(bw.cli("services", "get", sid)) == "20 Mbps (bandwidth_limit_mbps: 20)"

    bw.cli("services", "update", sid, "--bandwidth-limit", "0")
    wait_rate(bw, sid, bases, None)
    assert shown_limit(bw.cli("services", "get", sid)) == "unlimited (bandwidth_limit_mbps: 0)"
    assert re.search(rf"^{sid}\s.*\s-$", bw.cli("services", "list"), re.M), "no Q flag once unlimited"
    for name in ("a", "b"):
        assert bw.shaped(name, bases[name]) == Shaped([], [], False), "0 removes the class (and the idle root)"
    assert bw.t.cl.call(_greeted, S1), "the service still carries connections, unshaped"


# --- the limit holds ----------------------------------------------------------------------------------------

def test_a_50_mbps_service_measures_40_to_55_with_iperf3_in_each_direction(bw: BandwidthLab) -> None:
    bw.create_limited(LIMIT, "192.168.100.0/24")
    up = settled(lambda: iperf(bw.t.cl, S1), within(*IN_BOUNDS), "source->target (shaped by agent-a)")
    down = settled(lambda: iperf(bw.t.cl, S1, reverse=True), within(*IN_BOUNDS),
                   "target->source, iperf3 -R (shaped by agent-b)")
    assert up.error is None and IN_BOUNDS[0] <= up.total <= IN_BOUNDS[1], f"source->target: {up}"
    assert down.error is None and IN_BOUNDS[0] <= down.total <= IN_BOUNDS[1], f"target->source: {down}"


def test_a_50_mbps_kcp_service_sends_within_5_percent_of_its_limit_each_way(bw: BandwidthLab) -> None:
    """KCP paces each session at the limit (a little under it), so HTB's class is filled but not overrun."""
    sid = bw.create_limited(LIMIT, "192.168.100.0/24", transport="kcp")
    for name, reverse in (("a", False), ("b", True)):
        base = bw.block(name, sid)
        rate = settled(lambda name=name, base=base, reverse=reverse: wire_rate(bw, name, base, reverse=reverse),
                       lambda r: 0.95 * LIMIT <= r <= 1.05 * LIMIT, f"KCP service, wire rate on agent-{name}")
        assert 0.95 * LIMIT <= rate <= 1.05 * LIMIT, f"agent-{name} sent {rate:.1f} Mbit/s for a {LIMIT} limit"
    goodput = iperf(bw.t.cl, S1)
    assert goodput.error is None and goodput.total >= 0.85 * LIMIT, goodput  # and it carries that much payload


@dataclass
class LiveRun:
    at_limit: float
    updated: float
    lifted: float
    exit_code: int
    update_applied_s: float
    lift_applied_s: float


def test_update_changes_the_rate_live_on_the_same_connection_and_0_lifts_it(bw: BandwidthLab) -> None:
    sid = bw.create_limited(LIMIT, "192.168.100.0/24")
    bases = {n: bw.block(n, sid) for n in ("a", "b")}

    def live_run() -> LiveRun:
        """One 6 s iperf3 -R connection: 50 Mbit/s, then ``update 20`` at 1.75 s, then ``update 0`` at 3.9 s."""
        bw.cli("services", "update", sid, "--bandwidth-limit", str(LIMIT))
        wait_rate(bw, sid, bases, "50Mbit")
        run = LiveIperf(bw.t.cl, S1, seconds=6)
        try:
            origin = run.wait_started()
            time.sleep(max(0.0, origin + 1.75 - time.monotonic()))
            asked = time.monotonic()
            bw.cli("services", "update", sid, "--bandwidth-limit", str(UPDATED))
            applied = wait_rate(bw, sid, bases, "20Mbit")
            time.sleep(max(0.0, origin + 3.9 - time.monotonic()))
            lift_asked = time.monotonic()
            bw.cli("services", "update", sid, "--bandwidth-limit", "0")
            lifted_at = wait_rate(bw, sid, bases, None)
            code = run.finish()
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        settle = 0.25  # the queue built at the old rate drains, TCP finds the new rate
        return LiveRun(at_limit=round(run.rate(origin + 0.5, asked), 1),
                       updated=round(run.rate(applied + settle, lift_asked), 1),
                       lifted=round(run.rate(lifted_at + settle, origin + 6.5), 1), exit_code=code,
                       update_applied_s=round(applied - asked, 2), lift_applied_s=round(lifted_at - lift_asked, 2))

    def ok(r: LiveRun) -> bool:
        return (r.exit_code == 0 and IN_BOUNDS[0] <= r.at_limit <= IN_BOUNDS[1]
                and UPDATED_BOUNDS[0] <= r.updated <= UPDATED_BOUNDS[1] and r.lifted >= LIFTED_MIN)

    result = settled(live_run, ok, "one connection at 50 -> 20 -> 0 (Mbit/s)")
    assert result.exit_code == 0, "the iperf3 connection did not survive the live changes"
    assert IN_BOUNDS[0] <= result.at_limit <= IN_BOUNDS[1], f"before the update: {result}"
    assert UPDATED_BOUNDS[0] <= result.updated <= UPDATED_BOUNDS[1], f"after the live update to 20: {result}"
    assert result.lifted >= LIFTED_MIN, f"after --bandwidth-limit 0 the same connection stayed slow: {result}"


def test_two_concurrent_flows_of_one_service_each_get_a_fair_share(bw: BandwidthLab) -> None:
    sid = bw.create_limited(LIMIT, "192.168.100.0/24")
    base = bw.block("a", sid)
    before = bw.slot_bytes("a", base)

    def fair(r: Iperf) -> bool:
        return (within(*IN_BOUNDS)(r) and len(r.streams) == 2
                and 0.7 <= r.streams[0] / max(r.streams[1], 1e-9) <= 1.3)

    result = settled(lambda: iperf(bw.t.cl, S1, parallel=2), fair, "two flows (Mbit/s total, per flow)")
    after = bw.slot_bytes("a", base)
    busy = [c for c in after if after[c] - before.get(c, 0) > 1_000_000]
    assert result.error is None and len(result.streams) == 2, result
    first, second = result.streams
    assert IN_BOUNDS[0] <= result.total <= IN_BOUNDS[1], f"together {result.total:.1f} Mbit/s"
    assert 0.7 <= first / second <= 1.3, f"unfair split {first:.1f} / {second:.1f} Mbit/s"
    assert len(busy) >= 2, f"the two connections should use two flow slots of the service, used {busy}"


def test_an_unrelated_unlimited_service_is_unaffected(bw: BandwidthLab) -> None:
    limited = bw.create_limited(LIMIT, "192.168.100.0/24")
    other = bw.pair.create_service(name="unrelated")
    bw.pair.add_routes(other, {"dest_cidr": "192.168.200.0/24", "priority": 100})
    bw.wait_carried(other, "192.168.200.0/24")

    def both() -> tuple[Iperf, Iperf]:
        with ThreadPoolExecutor(2) as pool:
            shaped = pool.submit(iperf, bw.t.cl, S1)
            free = pool.submit(iperf, bw.t.cl, S2)
            return shaped.result(), free.result()

    shaped, free = settled(both, lambda r: within(*IN_BOUNDS)(r[0]) and within(LIFTED_MIN, 1e9)(r[1]),
                           "limited service to s1 || unrelated unlimited service to s2, at the same time")
    assert shaped.error is None and IN_BOUNDS[0] <= shaped.total <= IN_BOUNDS[1], f"limited service: {shaped}"
    assert free.error is None and free.total >= LIFTED_MIN, f"the unrelated service was held back: {free}"
    for name in ("a", "b"):
        assert bw.shaped(name, bw.block(name, other)).classes == [], "an unlimited service gets no class"
        assert bw.shaped(name, bw.block(name, limited)).rate == "50Mbit"


# --- nothing is left --------------------------------------------------------------------------------------

def test_deleting_a_service_leaves_no_class_or_qdisc_of_it_on_either_agent(bw: BandwidthLab) -> None:
    gone = bw.create_limited(LIMIT, "192.168.100.0/24")
    kept = bw.create_limited(30, "192.168.200.0/24")
    gone_bases = {n: bw.block(n, gone) for n in ("a", "b")}
    kept_bases = {n: bw.block(n, kept) for n in ("a", "b")}
    for name in ("a", "b"):
        assert bw.shaped(name, gone_bases[name]).rate == "50Mbit"

    bw.cli("services", "delete", gone, "--yes")
    for name in ("a", "b"):
        wait_until(lambda name=name: not bw.shaped(name, gone_bases[name]).classes,
                   what=f"agent-{name} to remove the deleted service's classes")
        left = bw.shaped(name, gone_bases[name])
        assert left.classes == [] and left.leaves == [], f"agent-{name} kept shaping of the deleted service: {left}"
        assert bw.shaped(name, kept_bases[name]).rate == "30Mbit", "the other service keeps its limit"
    assert bw.t.cl.call(_greeted, S2), "the other service still carries connections"
    assert gone not in bw.cli("services", "list")

    bw.cli("services", "delete", kept, "--yes")
    for name in ("a", "b"):
        wait_until(lambda name=name: " 61: " not in bw.host(name).run("tc", "qdisc", "show").stdout,
                   what=f"agent-{name} to remove Arctic's root qdisc with the last limited service")
        assert bw.host(name).run("tc", "class", "show", "dev", bw.core_dev(name)).stdout.strip() == ""
