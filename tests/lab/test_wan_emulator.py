"""The WAN emulator (harness.wan) delivers what it is configured for, measured at the receiver.

Every figure here is measured by the receiving lab host: datagrams carry their sequence number and send time
(CLOCK_REALTIME, shared by all namespaces) and are stamped by the receiving kernel (SO_TIMESTAMPNS), so the
test process's own scheduling does not enter the delays. The end of a transfer is an event, not a sleep: the
emulator's counters say when it has read everything that was sent and holds nothing, and since its writes into
the TUN device are delivered synchronously, everything it let through is then in the receiver's socket.

Loss is only ever the emulator's: each test checks that the kernel dropped nothing elsewhere (the TUN device's
queue in front of the emulator, the receiver's socket buffer), and bulk senders are flow-controlled by the
emulator's read counter so that the TUN queue cannot overflow however slow the machine is.

Statistical tolerances (stated where they are used) are chosen so that a correct emulator fails a check with a
probability below about 1e-5: the sample sizes follow from the tolerance, not the other way round.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import select
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from harness import (
    Host,
    Lab,
    WanError,
    WanLink,
    WanTransit,
    ping,
    root_namespace_untouched,
    tcp_connect,
    wan_transit,
)
from harness.netns import is_dead

pytestmark = pytest.mark.lab

SCM_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the same number is the option and the cmsg type
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python does not name it
HEADER = struct.Struct("!QQ")  # sequence number, send time in ns (CLOCK_REALTIME)
UDP_IP_OVERHEAD = 28  # the emulator's rate counts IP packet bytes: payload + UDP 8 + IPv4 20
Z = 4.5  # a check at 4.5 standard deviations fails by chance with probability ~7e-6 (two-sided)
_ports = iter(range(40000, 41000))


# --- measurement helpers --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arrival:
    seq: int
    sent_ns: int
    recv_ns: int
    ip_bytes: int

    @property
    def delay(self) -> float:
        """One-way delay in seconds (send time stamped by the sender, arrival by the receiving kernel)."""
        return (self.recv_ns - self.sent_ns) / 1e9


def _rx_socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)  # no drop even if the reader lags
    sock.setsockopt(socket.SOL_SOCKET, SCM_TIMESTAMPNS, 1)
    sock.bind((ip, port))
    return sock


def _tx_socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((ip, port))
    return sock


def _kernel_ns(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec * 1_000_000_000 + nsec
    raise AssertionError("the receiving kernel did not stamp a datagram (SO_TIMESTAMPNS)")


class UdpFlow:
    """Datagrams from one lab host to another through the emulator, recorded on arrival by a reader thread.

    Both sockets are created inside their hosts' namespaces (``Host.call``); the test process only drives them.
    """

    def __init__(self, t: WanTransit, src: Host, dst: Host, dst_ip: str, direction: str) -> None:
        self.wan, self.direction = t.wan, direction
        port = next(_ports)
        self.rx: socket.socket = dst.call(_rx_socket, dst_ip, port)
        self.tx: socket.socket = src.call(_tx_socket, dst_ip, port)
        self.base_rx = self.wan.stats()[direction]["rx_packets"]
        self.sent = 0
        self.arrivals: list[Arrival] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"udpflow-{port}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        sock, out = self.rx, self.arrivals
        while True:
            stopping = self._stop.is_set()
            if select.select([sock], [], [], 0.05)[0]:
                while True:
                    try:
                        data, anc, _, _ = sock.recvmsg(2048, 256, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    seq, sent_ns = HEADER.unpack_from(data)
                    out.append(Arrival(seq, sent_ns, _kernel_ns(anc), len(data) + UDP_IP_OVERHEAD))
            elif stopping:  # asked to stop and the socket was found empty after that: done
                return

    def send(self, count: int, *, size: int = 64, pps: float | None = None, window: int = 512,
             at: dict[int, Callable[[], object]] | None = None, limit_s: float = 60.0) -> int:
        """Send ``count`` datagrams of ``size`` payload bytes, paced at ``pps`` or as fast as the emulator reads.

        Unpaced, the sender waits every ``window`` datagrams until the emulator has read them all, so the TUN
        queue (4096 packets) cannot overflow on any machine. ``at`` runs a callable just before a given sequence
        number (live reconfiguration). Bounded by ``count`` and ``limit_s``.
        """
        pad = b"\0" * max(0, size - HEADER.size)
        send, now_ns, monotonic = self.tx.send, time.time_ns, time.monotonic
        start = monotonic()
        for i in range(count):
            seq = self.sent
            if at and seq in at:
                at[seq]()
            if pps is not None:
                wait = start + i / pps - monotonic()
                if wait > 0:
                    time.sleep(wait)  # pacing only: nothing is concluded from it
            elif i and i % window == 0:
                self.wan.wait_read(self.direction, self.base_rx + seq, timeout=limit_s)
            send(HEADER.pack(seq, now_ns()) + pad)
            self.sent += 1
            if monotonic() - start > limit_s:
                raise TimeoutError(f"sending {count} datagrams took more than {limit_s}s")
        return self.sent

    def finish(self, timeout: float = 60.0) -> list[Arrival]:
        """Wait until the emulator has passed on or dropped everything sent, then collect what arrived."""
        try:
            self.wan.wait_drained(self.direction, self.base_rx + self.sent, timeout=timeout)
        finally:
            self._stop.set()
            self._reader.join(timeout=30)
            self.tx.close()
            self.rx.close()
        assert not self._reader.is_alive(), "the reader thread did not stop"
        return sorted(self.arrivals, key=lambda a: a.recv_ns)


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _icmp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SCM_TIMESTAMPNS, 1)
    return sock


def icmp_rtts(host: Host, address: str, count: int, *, timeout: float = 3.0) -> list[float]:
    """Round-trip times (s) of ``count`` ICMP echoes one after the other; the far kernel answers them itself."""
    ident = secrets.randbits(16)
    rtts = []
    with host.call(_icmp_socket) as sock:
        for seq in range(count):
            body = struct.pack("!HH", ident, seq) + b"arctic-wan-rtt!!"
            packet = struct.pack("!BBH", 8, 0, _checksum(b"\x08\x00\x00\x00" + body)) + body
            sent = time.time_ns()
            sock.sendto(packet, (address, 0))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    raise AssertionError(f"echo {seq} to {address} got no reply within {timeout}s")
                data, anc, _, _ = sock.recvmsg(2048, 256)
                icmp = data[(data[0] & 0x0F) * 4:]
                if icmp[0] == 0 and icmp[4:8] == body[:4]:
                    rtts.append((_kernel_ns(anc) - sent) / 1e9)
                    break
    return rtts


def udp_errors(host: Host) -> tuple[int, int]:
    """(InErrors, RcvbufErrors) of the host's UDP: kernel drops on the receiving side."""
    lines = [line.split() for line in host.run("cat", "/proc/net/snmp").stdout.splitlines() if line.startswith("Udp:")]
    row = dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))
    return row["InErrors"], row["RcvbufErrors"]


def tun_drops(t: WanTransit) -> dict[str, int]:
    """Packets the kernel dropped in front of the emulator (a full TUN queue), per TUN device."""
    links = t.kernel_counters()["links"]
    return {name: links[name]["tx"]["dropped"] for name in ("tun-ab", "tun-ba")}


@contextlib.contextmanager
def only_the_emulator_drops(t: WanTransit, receiver: Host) -> Iterator[None]:
    """Assert that neither the TUN queues nor the receiver's UDP stack dropped anything during the block."""
    tun_before, udp_before = tun_drops(t), udp_errors(receiver)
    yield
    assert tun_drops(t) == tun_before, "the TUN queue in front of the emulator overflowed"
    assert udp_errors(receiver) == udp_before, "the receiver's kernel dropped datagrams"


def packets_for(p: float, rel_tol: float) -> int:
    """Sample size so that a Bernoulli(p) rate estimate lies within rel_tol of p at Z standard deviations."""
    return math.ceil(Z**2 * (1 - p) / (p * rel_tol**2))


def delays(arrivals: list[Arrival]) -> list[float]:
    return [a.delay for a in arrivals]


# --- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wan_lab() -> Iterator[WanTransit]:
    """One emulated-WAN transit for the module (building it takes a few seconds); each test resets the link."""
    with Lab(prefix="arcwan") as lab:
        yield wan_transit(lab)


@pytest.fixture
def t(wan_lab: WanTransit) -> Iterator[WanTransit]:
    wan_lab.wan.clear()
    yield wan_lab
    wan_lab.wan.clear()


# --- delay and jitter -----------------------------------------------------------------------------------------

def test_round_trip_time_is_the_two_one_way_delays_within_10_percent(t: WanTransit) -> None:
    t.wan.set(delay_ms=50)
    rtts = icmp_rtts(t.agent_a, t.agent_b_ip, 15)
    # the emulator never releases early: every RTT is at least the 100 ms asked (clock slew allowance 0.5 ms)
    assert min(rtts) >= 0.0995, rtts
    assert statistics.median(rtts) == pytest.approx(0.100, rel=0.10), rtts


def test_each_direction_has_its_own_delay(t: WanTransit) -> None:
    t.wan.set("ab", delay_ms=30)
    t.wan.set("ba", delay_ms=70)
    ab = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    ab.send(200, pps=1000)
    ba = UdpFlow(t, t.agent_b, t.agent_a, t.agent_a_ip, "ba")
    ba.send(200, pps=1000)
    there, back = ab.finish(), ba.finish()
    assert len(there) == len(back) == 200
    assert statistics.median(delays(there)) == pytest.approx(0.030, rel=0.10)
    assert statistics.median(delays(back)) == pytest.approx(0.070, rel=0.10)
    assert statistics.median(icmp_rtts(t.agent_a, t.agent_b_ip, 5)) == pytest.approx(0.100, rel=0.10)


def test_jitter_varies_the_delay_but_keeps_packet_order_by_default(t: WanTransit) -> None:
    t.wan.set("ab", delay_ms=30, jitter_ms=10)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    with only_the_emulator_drops(t, t.agent_b):
        flow.send(3000, pps=2000)
        got = flow.finish()
    assert len(got) == 3000
    assert [a.seq for a in got] == list(range(3000)), "jitter reordered packets although reorder was not asked"
    d = sorted(delays(got))
    assert d[0] >= 0.020 - 0.0005, "a packet came earlier than delay - jitter"
    # the delay really varies: the middle 90 % of packets span at least 8 of the 20 ms jitter range (with a
    # new random point every 40 ms over 1.5 s, a narrower span needs ~37 uniform draws in a 40 % band: ~1e-14)
    assert d[int(0.95 * len(d))] - d[int(0.05 * len(d))] >= 0.008, (d[0], d[-1])
    assert statistics.median(d) == pytest.approx(0.030, abs=0.005)


def test_jitter_reorders_only_when_asked(t: WanTransit) -> None:
    t.wan.set("ab", delay_ms=30, jitter_ms=10, reorder=True)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    flow.send(2000, pps=2000)
    got = flow.finish()
    assert len(got) == 2000
    highest, late = -1, 0
    for a in got:
        late += a.seq < highest
        highest = max(highest, a.seq)
    # independent uniform jitter of +-10 ms on packets 0.5 ms apart: most packets overtake or are overtaken
    assert late >= 0.10 * len(got), late


# --- loss -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.05, 0.10])
def test_random_loss_rate_is_within_10_percent_of_the_configured_one(t: WanTransit, p: float) -> None:
    # n is chosen so that 10 % relative is Z = 4.5 standard deviations of the estimate: 38,475 datagrams at
    # 5 %, 18,225 at 10 % (2,000-5,000 would make 10 % only 1.1-2.3 sigma: a correct emulator would fail often)
    n = packets_for(p, 0.10)
    t.wan.set("ab", loss=p)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    before = t.wan.stats()["ab"]
    with only_the_emulator_drops(t, t.agent_b):
        flow.send(n)
        got = flow.finish()
    after = t.wan.stats()["ab"]
    measured = 1 - len({a.seq for a in got}) / n
    assert measured == pytest.approx(p, rel=0.10), f"{measured:.4f} lost of {n}, asked {p}"
    assert after["lost_random"] - before["lost_random"] == n - len(got), "receiver and emulator disagree"
    assert [a.seq for a in got] == sorted(a.seq for a in got), "loss must not reorder"


def test_gilbert_elliott_loss_comes_in_bursts_of_the_configured_mean_length(t: WanTransit) -> None:
    good_to_bad, bad_to_good = 0.01, 0.25  # mean burst 1/0.25 = 4 packets; stationary loss 0.01/0.26 = 3.85 %
    n = 40_000
    t.wan.set("ab", ge_good_to_bad=good_to_bad, ge_bad_to_good=bad_to_good, ge_bad_loss=1.0)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    with only_the_emulator_drops(t, t.agent_b):
        flow.send(n)
        got = flow.finish()
    received = {a.seq for a in got}
    bursts, run = [], 0
    for seq in range(n):
        if seq in received:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    mean_burst = statistics.mean(bursts)
    loss = 1 - len(received) / n
    # ~385 bursts, geometric lengths (sd 3.46): the mean's sd is 0.18, so +-25 % (1 packet) is 5.7 sigma
    assert mean_burst == pytest.approx(1 / bad_to_good, rel=0.25), (mean_burst, len(bursts))
    # correlated losses: sd of the rate ~6.5 % relative at this n, so +-30 % is 4.6 sigma
    assert loss == pytest.approx(good_to_bad / (good_to_bad + bad_to_good), rel=0.30), loss
    assert mean_burst > 2.5, "independent loss at this rate would give bursts of ~1.04 packets"


# --- the bottleneck -------------------------------------------------------------------------------------------

def test_rate_limit_holds_within_10_percent_and_its_queue_is_bounded(t: WanTransit) -> None:
    rate = 2_000_000  # bytes/s of IP packets (16 Mbit/s)
    queue = 100_000  # bytes: 50 ms at the rate
    t.wan.set("ab", delay_ms=10, rate_bytes=rate, queue_bytes=queue)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    before = t.wan.stats()["ab"]
    with only_the_emulator_drops(t, t.agent_b):
        flow.send(8000, size=972, pps=4000)  # 1000-byte IP packets offered at 2x the rate for 2 s
        got = flow.finish()
    after = t.wan.stats()["ab"]
    assert after["dropped_queue"] > before["dropped_queue"], "the offered load never filled the queue"
    span = (got[-1].recv_ns - got[0].recv_ns) / 1e9
    measured = sum(a.ip_bytes for a in got[1:]) / span
    assert measured == pytest.approx(rate, rel=0.10), f"{measured * 8 / 1e6:.2f} Mbit/s at the receiver"
    # with the queue full, a packet waits queue/rate = 50 ms on top of the 10 ms delay; never much more
    late = delays(got[len(got) // 2:])
    assert statistics.median(late) == pytest.approx(0.010 + queue / rate, rel=0.10)


# --- reconfiguration ------------------------------------------------------------------------------------------

def test_reconfiguring_live_takes_effect_without_restart_or_losing_packets_in_flight(t: WanTransit) -> None:
    t.wan.set("ab", delay_ms=80)
    pid, version = t.wan.pid, t.wan.request({"op": "get"})["version"]
    before = t.wan.stats()["ab"]
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    changed: list[dict] = []
    # at 1000 datagrams/s, ~80 are in flight when the delay drops to 30 ms
    flow.send(1500, pps=1000, at={750: lambda: changed.append(t.wan.set("ab", delay_ms=30))})
    got = flow.finish()
    assert changed and changed[0]["ab"]["delay_ms"] == 30
    assert [a.seq for a in got] == list(range(1500)), "packets in flight were lost or overtaken"
    assert statistics.median(delays(got[:700])) == pytest.approx(0.080, rel=0.10)
    assert statistics.median(delays(got[850:])) == pytest.approx(0.030, rel=0.10)
    after = t.wan.stats()["ab"]
    assert t.wan.pid == pid, "the emulator was restarted"
    assert t.wan.request({"op": "get"})["version"] == version + 1
    assert after["rx_packets"] - before["rx_packets"] == 1500, "the counters were reset: not the same process"


def test_an_invalid_setting_is_refused_and_changes_nothing(t: WanTransit) -> None:
    t.wan.set(delay_ms=20)
    before = t.wan.config()
    for bad in ({"loss": 1.5}, {"delay_ms": -1}, {"jitter": 3}, {"ge_good_to_bad": 0.1, "ge_bad_to_good": 0}):
        with pytest.raises(WanError, match="refused"):
            t.wan.set(**bad)
    assert t.wan.config() == before


# --- the path -------------------------------------------------------------------------------------------------

def test_nothing_crosses_between_the_agents_except_through_the_emulator(t: WanTransit) -> None:
    kernel_before, emu_before = t.kernel_counters(), t.wan.stats()
    for direction, src, dst, ip in (("ab", t.agent_a, t.agent_b, t.agent_b_ip),
                                    ("ba", t.agent_b, t.agent_a, t.agent_a_ip)):
        flow = UdpFlow(t, src, dst, ip, direction)
        flow.send(2000)
        assert len(flow.finish()) == 2000
    kernel, emu = t.kernel_counters(), t.wan.stats()

    def delta(name: str) -> int:
        return kernel["nft"][name] - kernel_before["nft"][name]

    assert delta("bypass_ab") == delta("bypass_ba") == 0
    for d in ("ab", "ba"):
        into = emu[d]["rx_packets"] - emu_before[d]["rx_packets"]
        out = emu[d]["tx_packets"] - emu_before[d]["tx_packets"]
        assert into >= 2000 and out == into
        assert delta(f"to_emulator_{d}") == into, "the kernel forwarded into the TUN what the emulator read"
        assert delta(f"from_emulator_{d}") == out, "and forwarded on exactly what the emulator wrote"

    # and with every packet dropped, the agents cannot reach each other at all; ctl still reaches both
    t.wan.set(loss=1.0)
    assert not ping(t.agent_a, t.agent_b_ip) and not ping(t.agent_b, t.agent_a_ip)
    assert not tcp_connect(t.agent_a, t.agent_b_ip, 22, timeout=0.5)
    assert ping(t.ctl, t.agent_a_ip) and ping(t.ctl, t.agent_b_ip)
    t.enable_direct_routing()
    try:
        assert not ping(t.cl, t.s1_ip), "the client LAN reached the servers around the emulator"
        t.wan.clear()
        assert ping(t.cl, t.s1_ip), "with a clean link, routed LAN traffic crosses the emulator"
    finally:
        t.disable_direct_routing()


def test_it_holds_every_packet_of_a_long_fat_window_until_it_is_due(t: WanTransit) -> None:
    n = 30_000  # a 1000-packet window at 250 ms RTT and beyond: tens of thousands held at once
    t.wan.set("ab", delay_ms=2000)
    flow = UdpFlow(t, t.agent_a, t.agent_b, t.agent_b_ip, "ab")
    with only_the_emulator_drops(t, t.agent_b):
        flow.send(n)
        got = flow.finish()
    assert [a.seq for a in got] == list(range(n))
    assert min(delays(got)) >= 1.9995
    in_flight_at_first_arrival = sum(a.sent_ns < got[0].recv_ns for a in got)
    assert t.wan.stats()["ab"]["max_held"] >= in_flight_at_first_arrival >= min(n, 10_000)


# --- lifetime -------------------------------------------------------------------------------------------------

def test_the_emulator_is_a_tracked_lab_process_that_ends_with_the_lab() -> None:
    with root_namespace_untouched("a WAN transit's life"), Lab(prefix="arcwan") as lab:
        t = wan_transit(lab)
        proc = t.wan.process
        assert proc is not None and proc in t.wan_host.processes and t.wan.pid == proc.pid
        assert ping(t.agent_a, t.agent_b_ip)
        control = t.wan.control
    assert is_dead(proc.pid)
    with pytest.raises(WanError, match="did not answer"):
        WanLink(control).stats()
