"""The KCP transport end to end across an emulated WAN: what a KCP service must do, and what it must refuse.

Lab: ``dataplanekit`` over ``harness.wan_transit`` (agent-a <-> agent-b through the user-space WAN emulator, so
delay and loss are real packets held and dropped). Every service of the plane uses ``transport_type: kcp``: its
sessions are KCP over UDP with sealed datagrams (``dataplane.transports.kcp``).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dataplanekit import (
    SERVER_PORT,
    TRANSPARENT_CLIENT,
    TUNNEL_PORT,
    DigestServer,
    Exchange,
    Plane,
    build_topology,
    client,
    exchange,
    s1,
    server_reset_reaches_client,
)
from harness import Lab

pytestmark = pytest.mark.lab

ETH_P_IP = 0x0800


@pytest.fixture(scope="module")
def wan_lab():
    with Lab(prefix="kcp") as lab:
        t, servers = build_topology(lab, wan=True)
        try:
            yield lab, t, servers
        finally:
            for server in servers.values():
                server.close()


@pytest.fixture(scope="module")
def plane(wan_lab):
    lab, t, servers = wan_lab
    # KCP seals every datagram whatever the TCP encryption says. One worker per side: every datagram sent to
    # agent-b meets the worker that holds its session, so the drop reasons counted are the session's own.
    p = Plane(lab, t, "tls", transport="kcp", workers=1)
    p.servers = servers
    p.start("b")
    p.start("a")
    p.wait_for("a", lambda s: s["peers"].get(p.b.peer_id, {}).get("sessions_up", 0) >= 2 * p.workers,
               what="KCP sessions up")
    try:
        yield p
    finally:
        t.wan.clear()
        for name in ("a", "b"):
            p.stop(name)


@pytest.fixture
def link(plane):
    """The emulated WAN, reset to a perfect link after each test."""
    yield plane.t.wan
    plane.t.wan.clear()


def test_a_kcp_service_carries_every_byte_across_200_ms_and_10_percent_loss(plane, link):
    link.set(delay_ms=100, loss=0.10)
    result = exchange(client(plane), s1(plane), upload=2 << 20, reply=2 << 20, timeout=120)
    assert result.intact(), result
    lost = link.stats()
    assert lost["ab"]["lost_random"] > 0 and lost["ba"]["lost_random"] > 0  # the loss really happened
    plane.wait_for("a", lambda st: sum(s["kcp"]["retransmits"] + s["kcp"]["fec_recovered"]
                                       for s in st["sessions"] if s.get("kcp")) > 0,
                   what="KCP to report the packets it resent or rebuilt")


def test_a_thousand_concurrent_connections_arrive_intact(plane, link):
    link.set(delay_ms=10, loss=0.01)
    t = plane.t
    count = 1000
    socks = t.cl.call(lambda: [socket.socket() for _ in range(count)])
    before = plane.servers["s1"].count()

    def one(sock: socket.socket) -> Exchange:
        return exchange(sock, s1(plane), upload=24 << 10, reply=24 << 10, timeout=120)

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, socks, timeout=300))
    assert all(r.intact() for r in results)
    assert plane.servers["s1"].count() - before == count
    for name in ("a", "b"):
        plane.wait_for(name, lambda s: s["active_connections"] == 0, what="all streams closed", timeout=60)


def test_half_close_and_reset_behave_as_with_tcp(plane, link):
    link.set(delay_ms=20, loss=0.02)
    half = exchange(client(plane), s1(plane), upload=10, reply=300_000)  # our FIN first, then the reply
    assert half.intact()
    assert server_reset_reaches_client(plane, timeout=20)


def test_transparent_mode_shows_the_client_address_to_the_server(plane, link):
    link.set(delay_ms=10)
    result = exchange(client(plane), s1(plane), upload=1 << 20, reply=1 << 20, src_ip=TRANSPARENT_CLIENT)
    assert result.intact() and result.server["peer"] == TRANSPARENT_CLIENT


# --- what the KCP port refuses ---------------------------------------------------------------------------------------

def _capture_datagrams(plane: Plane, count: int) -> list[bytes]:
    """Sealed KCP datagrams agent-a sends to agent-b, seen on agent-b's interface (a raw socket, read only)."""
    t = plane.t

    listening = threading.Event()

    def sniff() -> list[bytes]:
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        raw.settimeout(10)
        listening.set()
        seen: list[bytes] = []
        with raw:
            deadline = time.monotonic() + 20
            while len(seen) < count and time.monotonic() < deadline:
                packet = raw.recv(65535)
                ihl = (packet[0] & 0x0F) * 4
                if packet[9] != socket.IPPROTO_UDP or socket.inet_ntoa(packet[12:16]) != t.agent_a_ip:
                    continue
                dport = struct.unpack("!H", packet[ihl + 2 : ihl + 4])[0]
                payload = packet[ihl + 8 :]
                if dport == TUNNEL_PORT and payload and payload[0] == 16:  # a sealed DATA datagram
                    seen.append(payload)
        return seen

    captured: list[bytes] = []
    sniffer = threading.Thread(target=lambda: captured.extend(t.agent_b.call(sniff, timeout=60)))
    sniffer.start()
    assert listening.wait(10)
    exchange(client(plane), s1(plane), upload=200_000, reply=10)
    sniffer.join(60)
    assert len(captured) >= count, f"captured {len(captured)} datagrams"
    return captured


def _send_from_ctl(plane: Plane, datagrams: list[bytes]) -> list[bytes]:
    """Send datagrams to agent-b's KCP port from ctl; whatever comes back within a short wait."""
    t = plane.t

    def send() -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((t.agent_b_ip, TUNNEL_PORT))
            for datagram in datagrams:
                sock.send(datagram)
            sock.settimeout(0.5)
            answers = []
            try:
                while True:
                    answers.append(sock.recv(65535))
            except (TimeoutError, ConnectionRefusedError):
                return answers

    return t.ctl.call(send, timeout=30)


def _dropped(plane: Plane) -> dict:
    return plane.stats("b").get("kcp_dropped", {})


def test_forged_replayed_and_garbage_datagrams_are_dropped_counted_and_unanswered(plane, link):
    link.set(delay_ms=5)
    real = _capture_datagrams(plane, 5)
    before = _dropped(plane)
    forged = bytearray(real[0])
    forged[8:16] = (1 << 40).to_bytes(8, "big")  # a counter never used: only the tag can refuse it
    answers = _send_from_ctl(plane, [real[1], real[2], bytes(forged), os.urandom(200), b"\x10" + os.urandom(60)])
    assert answers == []
    state = plane.wait_for("b", lambda s: sum(s.get("kcp_dropped", {}).values()) >= sum(before.values()) + 5,
                           what="every bad datagram counted")
    dropped = state["kcp_dropped"]
    assert dropped.get("replayed", 0) >= before.get("replayed", 0) + 2
    assert dropped.get("forged", 0) >= before.get("forged", 0) + 1
    assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()  # the session is unharmed


def test_the_handshake_never_answers_with_more_than_it_got(plane, link):
    from arctic.dataplane import handshake as hs
    from arctic.dataplane.transports import kcp

    link.set(delay_ms=5)
    rogue = hs.ClientHandshake(plane.rogue.key, hs.Hello(plane.rogue.peer_id, plane.b.peer_id, plane.svc, 0, 65536),
                               plane.b.public_raw)
    short = kcp._hs_datagram(kcp.HELLO, 1, 0, rogue.first_message)  # not padded: too short to be answered
    padded = kcp._hs_datagram(kcp.HELLO, 2, 0, rogue.first_message, pad_to=kcp.HELLO_SIZE)
    assert _send_from_ctl(plane, [short]) == []
    answers = _send_from_ctl(plane, [padded])
    assert answers and all(len(a) < len(padded) for a in answers)
    assert answers[0][0] == kcp.REJECT  # an unknown identity: refused, with nothing signed
    plane.wait_refused("b", "target", "tunnel_auth_failed")


def _kcp_totals(plane, name: str, key: str) -> int:
    sessions = plane.stats(name).get("sessions", [])
    return sum(s.get("kcp", {}).get(key, 0) for s in sessions if s.get("transport") == "kcp")


def test_lost_small_messages_are_rebuilt_from_parity_not_waited_for(plane, link):
    """A lone small message closes its FEC group at once (short parity): its loss is repaired by a parity copy
    a few microseconds behind it, not by a retransmission a timeout later."""
    link.set(delay_ms=25, loss=0.10)
    t = plane.t
    listener = t.s1.call(DigestServer._listen, t.s1_ip, SERVER_PORT + 2)

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    before = {name: _kcp_totals(plane, name, "fec_recovered") for name in ("a", "b")}
    short_before = _kcp_totals(plane, "a", "fec_short_groups")
    sock = client(plane)
    try:
        sock.settimeout(20)
        sock.connect((t.s1_ip, SERVER_PORT + 2))
        for n in range(150):  # one message in flight at a time: every group is a short one
            message = n.to_bytes(2, "big") * 32
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(64 - len(got))
            assert got == message
    finally:
        sock.close()
        server.join(10)
        listener.close()
    plane.wait_for("a", lambda s: sum(_kcp_totals(plane, n, "fec_recovered") - before[n] for n in ("a", "b")) > 0
                   and _kcp_totals(plane, "a", "fec_short_groups") - short_before >= 100,
                   what="the messages' groups closed early, and lost ones rebuilt from parity")


# --- deleting the KCP services ---------------------------------------------------------------------------------------

def _udp_sockets(host, port: int) -> list[str]:
    out = host.run("ss", "-Huan", f"( sport = :{port} or dport = :{port} )").stdout
    return [line for line in out.splitlines() if line.strip()]


def test_deleting_every_kcp_service_leaves_no_udp_socket_on_either_peer(plane):
    """(Last in the module: the plane carries TCP afterwards.)"""
    p, t = plane, plane.t
    assert exchange(client(p), s1(p), upload=1000, reply=1000).intact()
    assert _udp_sockets(t.agent_b, TUNNEL_PORT) and _udp_sockets(t.agent_a, TUNNEL_PORT)
    p.transport = "tcp"  # the same services, now on TCP: no KCP service is left
    p.write_configs()
    for name in ("b", "a"):
        p.reload(name)
    p.wait_for("b", lambda s: "kcp" not in s["listening"], what="the KCP listener closed")
    p.wait_for("a", lambda s: not [x for x in s["sessions"] if x.get("transport") == "kcp"],
               what="the KCP sessions closed")
    for host in (t.agent_a, t.agent_b):
        assert _udp_sockets(host, TUNNEL_PORT) == [], host
    assert exchange(client(p), s1(p), upload=1000, reply=1000).intact()  # carried by TCP now
