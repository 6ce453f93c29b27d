"""Per-service bandwidth limits hold in both directions, change live, share fairly and leave no trace.

Two lab peers joined by a veth pair; each runs its own ``QosManager`` inside its namespace, as each agent would.
Traffic is Python bulk flows whose sockets carry a slot priority (``SO_PRIORITY``), exactly what the data plane's
tunnel sockets do. Bounds are loose (shared 2-vCPU machine): goodput of a 50 Mbit/s service must fall in
40-55 Mbit/s. Each window lasts 2-3 s; a window that misses the bounds is measured again (at most three windows),
because TCP on a busy box has one-off hiccups that a broken limit would not recover from.
Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from arctic.ids import new_id
from arctic.netconf.qos import QosError, QosManager, ServiceLink, group_by_interface
from arctic.netconf.qos_kernel import TcKernel
from harness import Host, Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bandwidth.flows import Flow, FlowServer, measure, open_flow  # noqa: E402

pytestmark = pytest.mark.lab

A_IP, B_IP = "198.18.7.1", "198.18.7.2"
SECONDS = 3.0
ATTEMPTS = 3
_ports = itertools.count(7100)
SO_SNDBUFFORCE = 32  # linux/socket.h; the socket module does not name it


def settled(flows: list[Flow], check: Callable[[list[float]], bool], *, seconds: float = SECONDS,
            warmup: float = 0.5) -> list[float]:
    """Goodput per flow (Mbit/s) from the first of up to ATTEMPTS windows that passes ``check`` (else the last)."""
    for attempt in range(ATTEMPTS):
        rates = measure(flows, seconds, warmup=warmup if attempt == 0 else 0.0)
        if check(rates):
            break
    print("measured Mbit/s:", ", ".join(f"{r:.1f}" for r in rates))
    return rates


def between(lo: float, hi: float) -> Callable[[list[float]], bool]:
    return lambda rates: all(lo <= r <= hi for r in rates)


@dataclass
class Peers:
    lab: Lab
    a: Host  # the service's source peer
    b: Host  # the service's target peer
    a_dev: str  # a's interface towards b
    b_dev: str

    def apply(self, limits: dict[str, int], mgr_a: QosManager, mgr_b: QosManager) -> None:
        """Both peers shape their egress towards the other, as both agents' reconcilers would."""
        self.a.call(mgr_a.apply, {self.a_dev: limits})
        self.b.call(mgr_b.apply, {self.b_dev: limits})

    def server(self) -> FlowServer:
        return FlowServer(self.b, B_IP, next(_ports))

    def tc(self, host: Host, *args: str) -> str:
        return host.run("tc", *args).stdout


@pytest.fixture(scope="module")
def lab_peers() -> Iterator[Peers]:
    with Lab(prefix="arcq") as lab:
        a, b = lab.host("a"), lab.host("b")
        a_dev, b_dev = lab.wire(a, b, f"{A_IP}/30", f"{B_IP}/30")
        yield Peers(lab, a, b, a_dev, b_dev)


@pytest.fixture
def peers(lab_peers: Peers) -> Iterator[Peers]:
    """The shared peers, with every trace of shaping removed after each test (even a failing one)."""
    yield lab_peers
    for host in (lab_peers.a, lab_peers.b):
        host.call(QosManager().teardown)


@pytest.fixture
def managers() -> tuple[QosManager, QosManager]:
    return QosManager(), QosManager()


def test_a_50_mbps_service_measures_40_to_55_in_each_direction(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    sid = new_id("svc")
    desired_a = peers.a.call(group_by_interface, [ServiceLink(sid, B_IP, 50)])
    assert desired_a == {peers.a_dev: {sid: 50}}, "the interface towards the other peer comes from ip route get"
    peers.apply({sid: 50}, mgr_a, mgr_b)
    server = peers.server()
    try:
        up = open_flow(peers.a, server, "up", mgr_a.slot_priorities(sid)[0])
        down = open_flow(peers.a, server, "down", mgr_b.slot_priorities(sid)[0])
        up_mbps, down_mbps = settled([up, down], between(40, 55))
    finally:
        server.close()
    assert 40 <= up_mbps <= 55, f"source->target measured {up_mbps:.1f} Mbit/s"
    assert 40 <= down_mbps <= 55, f"target->source measured {down_mbps:.1f} Mbit/s"


def test_update_changes_the_rate_live_on_the_same_connection_and_0_lifts_it(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    sid = new_id("svc")
    peers.apply({sid: 50}, mgr_a, mgr_b)
    server = peers.server()
    try:
        flow = open_flow(peers.a, server, "up", mgr_a.slot_priorities(sid)[0])
        (at_50,) = settled([flow], between(40, 55), seconds=2.0)
        peers.apply({sid: 20}, mgr_a, mgr_b)
        (at_20,) = settled([flow], between(15, 22), seconds=2.0)
        peers.apply({sid: 0}, mgr_a, mgr_b)
        (lifted,) = settled([flow], lambda r: r[0] > 150, seconds=2.0)
        alive = not flow.counter.closed
    finally:
        server.close()
    assert 40 <= at_50 <= 55, f"at 50 Mbit/s measured {at_50:.1f}"
    assert 15 <= at_20 <= 22, f"after the live update to 20 Mbit/s measured {at_20:.1f}"
    assert lifted > 150, f"after setting 0 (unlimited) the same connection only reached {lifted:.1f} Mbit/s"
    assert alive, "the connection did not survive the rate changes"
    assert mgr_a.slot_priorities(sid), "an unlimited service keeps its priorities, so a later limit applies live"


def test_two_flows_of_one_service_each_get_a_fair_share(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    sid = new_id("svc")
    peers.apply({sid: 50}, mgr_a, mgr_b)
    slots = mgr_a.slot_priorities(sid)
    server = peers.server()
    try:
        flows = [open_flow(peers.a, server, "up", slots[0]), open_flow(peers.a, server, "up", slots[1])]
        first, second = settled(flows, lambda r: 40 <= sum(r) <= 55 and 0.7 <= r[0] / max(r[1], 1e-9) <= 1.3,
                                warmup=1.0)
    finally:
        server.close()
    assert 40 <= first + second <= 55, f"together {first + second:.1f} Mbit/s"
    assert 0.7 <= first / second <= 1.3, f"unfair split {first:.1f} / {second:.1f} Mbit/s"


def test_an_unrelated_service_is_unaffected(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    limited, unlimited = new_id("svc"), new_id("svc")
    peers.apply({limited: 50, unlimited: 0}, mgr_a, mgr_b)
    server = peers.server()
    try:
        shaped = open_flow(peers.a, server, "up", mgr_a.slot_priorities(limited)[0])
        other = open_flow(peers.a, server, "up", mgr_a.slot_priorities(unlimited)[0])
        no_service = open_flow(peers.a, server, "up", 0)
        shaped_mbps, other_mbps, plain_mbps = settled(
            [shaped, other, no_service], lambda r: 40 <= r[0] <= 55 and min(r[1:]) > 150)
    finally:
        server.close()
    assert 40 <= shaped_mbps <= 55, f"the limited service measured {shaped_mbps:.1f} Mbit/s"
    assert other_mbps > 150, f"the unlimited service was held to {other_mbps:.1f} Mbit/s"
    assert plain_mbps > 150, f"traffic of no service was held to {plain_mbps:.1f} Mbit/s"


def test_deleting_a_service_leaves_no_class_or_qdisc_of_it(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    gone, kept = new_id("svc"), new_id("svc")
    peers.apply({gone: 50, kept: 30}, mgr_a, mgr_b)
    gone_block = re.compile(rf"\b61:{mgr_a.slot_priorities(gone)[0] & 0xFFE0:x}\b")
    assert gone_block.search(peers.tc(peers.a, "class", "show", "dev", peers.a_dev))

    peers.apply({kept: 30}, mgr_a, mgr_b)
    classes = peers.tc(peers.a, "class", "show", "dev", peers.a_dev)
    assert not gone_block.search(classes) and "61:" in classes, "only the deleted service's classes went"
    assert mgr_a.slot_priorities(gone) == []

    peers.apply({}, mgr_a, mgr_b)
    for host, dev in ((peers.a, peers.a_dev), (peers.b, peers.b_dev)):
        assert peers.tc(host, "class", "show", "dev", dev).strip() == "", "a class survived the last service"
        assert peers.tc(host, "-j", "qdisc", "show", "dev", dev).count('"kind"') == 1
        assert '"noqueue"' in peers.tc(host, "-j", "qdisc", "show", "dev", dev), "the default root came back"


def test_only_unlimited_services_install_no_qdisc_at_all(peers: Peers, managers) -> None:
    mgr_a, mgr_b = managers
    peers.apply({new_id("svc"): 0}, mgr_a, mgr_b)
    assert '"noqueue"' in peers.tc(peers.a, "-j", "qdisc", "show", "dev", peers.a_dev)


def test_a_root_qdisc_arctic_did_not_install_is_never_replaced(peers: Peers, managers) -> None:
    mgr_a, _ = managers
    peers.a.run("tc", "qdisc", "add", "dev", peers.a_dev, "root", "handle", "1:", "tbf", "rate", "1gbit",
                "burst", "128k", "latency", "20ms")
    try:
        with pytest.raises(QosError, match="did not install"):
            peers.a.call(mgr_a.apply, {peers.a_dev: {new_id("svc"): 50}})
        qdiscs = peers.tc(peers.a, "qdisc", "show", "dev", peers.a_dev)
        assert "tbf 1:" in qdiscs and "htb" not in qdiscs
        assert peers.a.call(mgr_a.teardown) == [], "teardown must not remove a foreign root either"
    finally:
        peers.a.run("tc", "qdisc", "del", "dev", peers.a_dev, "root", check=False)


class _FailingOnce(TcKernel):
    """A kernel whose next batch gets a line tc rejects, after the valid ones have already been applied."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def run_batch(self, text: str) -> None:
        if self.armed:
            self.armed = False
            text += "class change dev nosuchdev classid 61:1 htb rate 1mbit\n"
        super().run_batch(text)


def test_a_rejected_batch_restores_the_previous_shaping(peers: Peers) -> None:
    kernel = _FailingOnce()
    mgr = QosManager(kernel=kernel)
    sid = new_id("svc")
    peers.a.call(mgr.apply, {peers.a_dev: {sid: 50}})
    before = peers.a.call(kernel.htb_classes, peers.a_dev)
    kernel.armed = True
    with pytest.raises(QosError, match="restored"):
        peers.a.call(mgr.apply, {peers.a_dev: {sid: 20}})
    after = peers.a.call(kernel.htb_classes, peers.a_dev)
    assert sorted((c.minor, c.rate_bps, c.ceil_bps) for c in after) == \
        sorted((c.minor, c.rate_bps, c.ceil_bps) for c in before)
    peers.a.call(mgr.apply, {peers.a_dev: {sid: 20}})
    assert {c.ceil_bps for c in peers.a.call(kernel.htb_classes, peers.a_dev)} == {20_000_000}


def test_packets_a_limit_drops_are_counted_for_its_service_only(peers: Peers, managers) -> None:
    """``QosManager.drops`` (``arctic_service_shaping_dropped_packets_total``) reads the kernel's own class counters:
    a UDP burst far above a 1 Mbit/s limit overflows the service's queue, an unrelated service drops nothing."""
    mgr_a, mgr_b = managers
    limited, other = new_id("svc"), new_id("svc")
    peers.apply({limited: 1, other: 100}, mgr_a, mgr_b)
    assert peers.a.call(mgr_a.drops) == {limited: 0, other: 0}
    priority = mgr_a.slot_priorities(limited)[0]

    def burst() -> None:
        """2,000 datagrams of 1,400 bytes at once (22 Mbit in well under a second); the send buffer is made large
        enough that the socket does not wait for the queue to drain, so the queue overflows."""
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, priority)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            for _ in range(2000):
                with contextlib.suppress(OSError):  # ENOBUFS: the queue dropped this one (what the test wants)
                    sock.sendto(b"x" * 1400, (B_IP, 9))

    peers.a.call(burst)
    drops = peers.a.call(mgr_a.drops)
    assert drops[limited] > 0 and drops[other] == 0, drops
