"""The TCP data plane end to end: client -> agent-a (TPROXY) -> tunnel -> agent-b -> server, real kernel.

Topology: ``harness.transit`` (client 10.0.0.2 behind agent-a 198.18.0.1; servers s1 192.168.100.2 and s2
192.168.200.2 behind agent-b 198.18.0.2; ``ctl`` 198.18.0.250 plays an attacker on the peer segment).
Until the netconf engineer's rules exist, this module installs the canonical TPROXY recipe itself, in a table
named ``arctic_dptest`` inside the lab namespaces only (dataplane-anchors.md section 1.5).

Every test runs for ``encryption: none`` (splice relay) and ``encryption: tls``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from arctic.dataplane import header as hdr
from arctic.dataplane import tls as dptls
from arctic.dataplane.channels import PlainChannel, TlsChannel
from arctic.dataplane.keys import private_key_pem, public_key_b64
from arctic.ids import new_id
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import Lab, transit
from harness.servers import LabServer

pytestmark = pytest.mark.lab

TPROXY_PORT, TUNNEL_PORT, SERVER_PORT = 61080, 61000, 8080
TRANSPARENT_CLIENT = "10.1.0.50"  # secondary client address whose traffic uses the transparent service
CLIENT6, TRANSPARENT_CLIENT6, AGENT_A6 = "fd00:10::2", "fd00:10::50", "fd00:10::1"
S1_GW6, S1_IP6 = "fd00:100::1", "fd00:100::2"
DEAD_PEER_IP, NO_AGENT_IP = "198.18.0.99", "198.18.0.250"  # nobody there / a host without a data plane
DEAD_DST, NO_AGENT_DST = "192.168.200.99", "192.168.200.98"

AGENT_A_NFT = f"""
table inet arctic_dptest {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 0x1 accept
    ip saddr 10.0.0.0/8 ip daddr {{ 192.168.100.0/24, 192.168.200.0/24 }} meta l4proto tcp \
      tproxy ip to :{TPROXY_PORT} meta mark set 0x1 accept
    ip6 saddr fd00:10::/64 ip6 daddr fd00:100::/64 meta l4proto tcp \
      tproxy ip6 to :{TPROXY_PORT} meta mark set 0x1 accept
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    tcp dport {TUNNEL_PORT} meta priority 1:20 counter name prio_1_20
  }}
  counter prio_1_20 {{ }}
}}
"""
AGENT_B_NFT = """
table inet arctic_dptest {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 0x1 accept
  }
}
"""


# --- the servers: read everything, report what they saw, answer with checksummed data -------------------------------

class DigestServer(LabServer):
    """Per connection: read until EOF (8-byte reply size first), then send a JSON line and that many bytes.

    The JSON line reports the peer address the server saw and the SHA-256 of what it received, so the client can
    prove byte-exact delivery in both directions and that half-close works (the reply comes after our FIN).
    """

    def __init__(self, host, ip: str, port: int = SERVER_PORT) -> None:
        super().__init__(host, ip, port)

    def handle(self, conn: socket.socket, peer: tuple) -> None:
        digest, total, first = hashlib.sha256(), 0, b""
        while chunk := conn.recv(1 << 18):
            digest.update(chunk)
            if len(first) < 8:
                first += chunk[: 8 - len(first)]
            total += len(chunk)
        reply_size = struct.unpack("!Q", first)[0] if len(first) == 8 else 0
        reply = os.urandom(min(reply_size, 64 << 20))
        line = json.dumps({"peer": peer[0], "received": total, "received_sha256": digest.hexdigest(),
                           "reply_sha256": hashlib.sha256(reply).hexdigest(), "reply": len(reply)})
        conn.sendall(line.encode() + b"\n" + reply)


@dataclass
class Exchange:
    sent_sha256: str
    sent: int
    server: dict
    reply_sha256: str
    reply: int

    def intact(self) -> bool:
        return (self.server["received_sha256"] == self.sent_sha256 and self.server["received"] == self.sent
                and self.server["reply_sha256"] == self.reply_sha256 and self.server["reply"] == self.reply)


def lab_socket(host, family: int = socket.AF_INET) -> socket.socket:
    """A socket that lives in ``host``'s namespace (it can then be used from any thread)."""
    return host.call(socket.socket, family, socket.SOCK_STREAM)


def exchange(sock: socket.socket, dst: tuple[str, int], *, upload: int, reply: int, src_ip: str | None = None,
             chunk: int = 1 << 16, pause: float = 0.0, timeout: float = 30.0) -> Exchange:
    """Connect, upload, half-close, read the server's reply to EOF. Raises on any connection error."""
    with sock:
        sock.settimeout(timeout)
        if src_ip:
            sock.bind((src_ip, 0))
        sock.connect(dst)
        payload = struct.pack("!Q", reply) + os.urandom(upload)
        for off in range(0, len(payload), chunk):
            sock.sendall(payload[off : off + chunk])
            if pause:
                time.sleep(pause)
        sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk_in := sock.recv(1 << 18):
            data += chunk_in
    line, _, body = bytes(data).partition(b"\n")
    return Exchange(hashlib.sha256(payload).hexdigest(), len(payload), json.loads(line),
                    hashlib.sha256(body).hexdigest(), len(body))


# --- identities, configs and processes ----------------------------------------------------------------------------

@dataclass
class Identity:
    peer_id: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def public_raw(self) -> bytes:
        return dptls.raw_public_key(self.key)

    @property
    def public_b64(self) -> str:
        return public_key_b64(self.key)


class Plane:
    """Both data-plane processes of one encryption mode, with their configs, servers and identities."""

    def __init__(self, lab: Lab, topo, encryption: str) -> None:
        self.lab, self.t, self.encryption = lab, topo, encryption
        self.dir = lab.run_dir / f"dp-{encryption}"
        self.dir.mkdir()
        self.a, self.b = Identity(new_id("peer")), Identity(new_id("peer"))
        self.rogue = Identity(new_id("peer"))  # a third identity nobody configured
        self.dead, self.no_agent = Identity(new_id("peer")), Identity(new_id("peer"))
        self.svc, self.svc_transparent = new_id("svc"), new_id("svc")
        self.svc_dead, self.svc_no_agent = new_id("svc"), new_id("svc")
        self.procs: dict[str, subprocess.Popen] = {}
        for ident, name in ((self.a, "a"), (self.b, "b")):
            key_file = self.dir / f"{name}.key"
            key_file.write_bytes(private_key_pem(ident.key))
            key_file.chmod(0o600)  # identity keys must not be readable by others (the loader refuses them)
        self.extra_routes: list[dict] = []
        self.bind_address: str | None = None
        self.tunnel_port = TUNNEL_PORT
        self.write_configs()

    def services(self) -> list[dict]:
        a, b = self.a.peer_id, self.b.peer_id
        route = {"id": 1, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100, "seq": 1}
        route6 = {"id": 3, "source_cidr": "fd00:10::/64", "dest_cidr": "fd00:100::/64", "seq": 5}
        return [
            {"id": self.svc, "source_peer_id": a, "target_peer_id": b, "transport_type": "tcp",
             "fully_transparent": False, "bind_address": self.bind_address, "so_priority": 0x10020,
             "routes": [route, route6, *self.extra_routes]},
            {"id": self.svc_transparent, "source_peer_id": a, "target_peer_id": b, "transport_type": "tcp",
             "fully_transparent": True, "bind_address": None, "so_priority": 0,
             "routes": [{"id": 1, "source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 100,
                         "seq": 2},
                        {"id": 2, "source_cidr": f"{TRANSPARENT_CLIENT6}/128", "dest_cidr": "fd00:100::/64",
                         "seq": 6}]},
            {"id": self.svc_dead, "source_peer_id": a, "target_peer_id": self.dead.peer_id, "transport_type": "tcp",
             "routes": [{"id": 1, "dest_cidr": f"{DEAD_DST}/32", "seq": 3}]},
            {"id": self.svc_no_agent, "source_peer_id": a, "target_peer_id": self.no_agent.peer_id,
             "transport_type": "tcp", "routes": [{"id": 1, "dest_cidr": f"{NO_AGENT_DST}/32", "seq": 4}]},
        ]

    def config(self, name: str) -> dict:
        me = self.a if name == "a" else self.b
        peers = {p.peer_id: {"public_key": p.public_b64, "tunnel_address": ip}
                 for p, ip in ((self.a, self.t.agent_a_ip), (self.b, self.t.agent_b_ip),
                               (self.dead, DEAD_PEER_IP), (self.no_agent, NO_AGENT_IP))}
        return {"local_peer_id": me.peer_id, "identity_key_file": f"{name}.key", "tproxy_port": TPROXY_PORT,
                "tunnel_port": self.tunnel_port, "tunnel_bind": "0.0.0.0", "encryption": self.encryption,
                "drain_seconds": 10, "connect_timeout": 1.0, "peers": peers, "services": self.services()}

    def config_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def write_configs(self) -> None:
        for name in ("a", "b"):
            tmp = self.dir / f".{name}.json.tmp"
            tmp.write_text(json.dumps(self.config(name), indent=1))
            os.replace(tmp, self.config_path(name))

    def stats(self, name: str) -> dict:
        try:
            return json.loads((self.dir / f"{name}.stats.json").read_text())
        except (OSError, ValueError):
            return {}

    def start(self, name: str) -> None:
        host = self.t.agent_a if name == "a" else self.t.agent_b
        (self.dir / f"{name}.stats.json").unlink(missing_ok=True)
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = host.popen(sys.executable, "-m", "arctic.dataplane", "--config", self.config_path(name),
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_for(name, lambda s: s.get("pid") == self.procs[name].pid and "tunnel" in s.get("listening", {}),
                      what="data plane ready")

    def stop(self, name: str, timeout: float = 15) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def reload(self, name: str) -> int:
        """SIGHUP and wait until the new generation is live; returns it."""
        before = self.stats(name).get("config_generation", 0)
        self.procs[name].send_signal(signal.SIGHUP)
        state = self.wait_for(name, lambda s: s.get("config_generation", 0) > before or s.get("config_error"),
                              what="reload")
        return state["config_generation"]

    def wait_for(self, name: str, predicate, *, what: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"data plane {name} exited ({proc.returncode}): {self.log(name)[-2000:]}")
            state = self.stats(name)
            if state and predicate(state):
                return state
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} on {name}: {self.stats(name)}\n{self.log(name)[-2000:]}")

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text()
        except OSError:
            return ""

    def refused(self, name: str, side: str = "target") -> dict:
        return self.stats(name).get("by_side", {}).get(side, {}).get("refused", {})

    def wait_refused(self, name: str, side: str, reason: str) -> None:
        """The stats file is rewritten every second: wait until it counts a refusal for ``reason``."""
        self.wait_for(name, lambda s: s["by_side"][side]["refused"].get(reason, 0) >= 1, what=f"refusal {reason}")


# --- fixtures -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab_topology():
    with Lab(prefix="dpt") as lab:
        t = transit(lab)
        t.client_addr(TRANSPARENT_CLIENT, 16)
        t.cl.addr("eth-lan", f"{CLIENT6}/64", f"{TRANSPARENT_CLIENT6}/64")
        t.agent_a.addr("eth-lan", f"{AGENT_A6}/64")
        t.agent_b.addr("eth-net100", f"{S1_GW6}/64")
        t.s1.addr("eth-net100", f"{S1_IP6}/64")
        lab.default_via(t.cl, AGENT_A6)
        lab.default_via(t.s1, S1_GW6)
        t.agent_a.run("nft", "-f", "-", input=AGENT_A_NFT)
        t.agent_b.run("nft", "-f", "-", input=AGENT_B_NFT)
        for host in (t.agent_a, t.agent_b):
            for family, anywhere in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
                host.ip(family, "rule", "add", "fwmark", "0x1", "lookup", "100")
                host.ip(family, "route", "add", "local", anywhere, "dev", "lo", "table", "100")
        servers = {"s1": DigestServer(t.s1, t.s1_ip), "s2": DigestServer(t.s2, t.s2_ip),
                   "s1v6": DigestServer(t.s1, S1_IP6)}
        try:
            yield lab, t, servers
        finally:
            for server in servers.values():
                server.close()


@pytest.fixture(scope="module", params=["none", "tls"])
def plane(request, lab_topology):
    lab, t, servers = lab_topology
    p = Plane(lab, t, request.param)
    p.servers = servers
    try:
        p.start("b")
        p.start("a")
        yield p
    finally:
        for name in ("a", "b"):
            p.stop(name)


def client(plane: Plane) -> socket.socket:
    return lab_socket(plane.t.cl)


def s1(plane: Plane) -> tuple[str, int]:
    return (plane.t.s1_ip, SERVER_PORT)


# --- TLS session resumption --------------------------------------------------------------------------------------

def _handshakes(plane: Plane) -> dict:
    time.sleep(1.1)  # the stats file is rewritten every second
    return plane.stats("b").get("tls_handshakes", {})


def test_tls_tunnels_resume_their_session_and_a_reloaded_target_asks_for_a_full_handshake(plane):
    if plane.encryption != "tls":  # plaintext tunnels do no TLS at all
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
        assert _handshakes(plane) == {"full": 0, "resumed": 0}
        return
    assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    before = _handshakes(plane)
    for _ in range(5):
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    after = _handshakes(plane)
    assert after["resumed"] - before["resumed"] == 5 and after["full"] == before["full"], (before, after)

    plane.reload("b")  # a new server context: tickets sealed by the old one are worthless
    assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    reloaded = _handshakes(plane)
    assert reloaded["full"] == after["full"] + 1 and reloaded["resumed"] == after["resumed"] + 1, (after, reloaded)


# --- relaying -------------------------------------------------------------------------------------------------------

def test_a_few_megabytes_cross_both_ways_intact_and_server_sees_agent_b(plane):
    result = exchange(client(plane), s1(plane), upload=3 << 20, reply=3 << 20)
    assert result.intact(), result
    assert result.server["peer"] == "192.168.100.1"  # agent-b's own address on the server LAN


def test_transparent_service_shows_the_client_address_to_the_server(plane):
    result = exchange(client(plane), s1(plane), upload=1 << 20, reply=1 << 20, src_ip=TRANSPARENT_CLIENT)
    assert result.intact(), result
    assert result.server["peer"] == TRANSPARENT_CLIENT


def test_ipv6_connections_are_relayed_and_transparent_mode_keeps_the_ipv6_client_address(plane):
    plain = exchange(lab_socket(plane.t.cl, socket.AF_INET6), (S1_IP6, SERVER_PORT), upload=1 << 20, reply=1 << 20,
                     src_ip=CLIENT6)
    assert plain.intact() and plain.server["peer"] == S1_GW6
    spoofed = exchange(lab_socket(plane.t.cl, socket.AF_INET6), (S1_IP6, SERVER_PORT), upload=1 << 20,
                       reply=1 << 20, src_ip=TRANSPARENT_CLIENT6)
    assert spoofed.intact() and spoofed.server["peer"] == TRANSPARENT_CLIENT6


def test_half_close_client_finishes_sending_and_still_receives_the_reply(plane):
    # exchange() shuts down its write side before the server even starts replying
    result = exchange(client(plane), s1(plane), upload=10, reply=200_000)
    assert result.intact(), result
    assert result.reply == 200_000


def test_server_reset_reaches_the_client_as_a_reset(plane):
    """RST propagates: a server that aborts its connection makes the client's connection fail, not end cleanly."""
    t = plane.t
    listener = t.s1.call(DigestServer._listen, t.s1_ip, SERVER_PORT + 1)

    def abort_first() -> None:
        conn, _ = listener.accept()
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    server = threading.Thread(target=abort_first, daemon=True)
    server.start()
    sock = client(plane)
    try:
        sock.settimeout(10)
        sock.connect((t.s1_ip, SERVER_PORT + 1))
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while sock.recv(1024):
                pass
    finally:
        sock.close()
        server.join(5)
        listener.close()


def test_two_hundred_concurrent_connections_all_arrive_intact(plane):
    t = plane.t
    n = 200
    socks = t.cl.call(lambda: [socket.socket() for _ in range(n)])
    start = threading.Barrier(n, timeout=30)

    def one(sock: socket.socket) -> Exchange:
        start.wait()
        return exchange(sock, s1(plane), upload=48 << 10, reply=48 << 10, timeout=60)

    before = plane.servers["s1"].count()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, socks, timeout=120))
    assert all(r.intact() for r in results)
    assert plane.servers["s1"].count() - before == n
    for name in ("a", "b"):
        plane.wait_for(name, lambda s: s.get("active_connections") == 0, what="all connections closed")


# --- failing fast -----------------------------------------------------------------------------------------------------

def _time_to_failure(plane: Plane, dst_ip: str) -> tuple[float, BaseException | bytes]:
    sock = client(plane)
    start = time.monotonic()
    try:
        sock.settimeout(10)
        sock.connect((dst_ip, SERVER_PORT))
        sock.sendall(b"x")
        outcome: BaseException | bytes = sock.recv(100)
    except OSError as err:
        outcome = err
    finally:
        sock.close()
    return time.monotonic() - start, outcome


@pytest.mark.parametrize("dst_ip", [NO_AGENT_DST, DEAD_DST], ids=["peer-without-data-plane", "peer-unreachable"])
def test_dead_target_peer_resets_the_client_within_two_seconds(plane, dst_ip):
    elapsed, outcome = _time_to_failure(plane, dst_ip)
    assert isinstance(outcome, ConnectionResetError), outcome
    assert elapsed < 2.0, f"client waited {elapsed:.2f} s"
    plane.wait_refused("a", "source", "tunnel_connect_failed")


def test_connection_without_matching_route_is_reset(plane):
    # agent-a's kernel intercepts all of 192.168.200.0/24, but no service routes 192.168.200.2 (yet)
    before = plane.servers["s2"].count()
    _elapsed, outcome = _time_to_failure(plane, plane.t.s2_ip)
    assert isinstance(outcome, ConnectionResetError), outcome
    plane.wait_refused("a", "source", "no_route")
    assert plane.servers["s2"].count() == before


# --- the target refuses what it must refuse --------------------------------------------------------------------------

def _tunnel_stream(plane: Plane, identity: Identity, header: bytes) -> int | None:
    """From ``ctl``: open a tunnel stream to agent-b as ``identity`` and send ``header``; the verdict or None."""
    t = plane.t
    sock = lab_socket(t.ctl)
    try:
        sock.settimeout(5)
        sock.connect((t.agent_b_ip, TUNNEL_PORT))
        if plane.encryption == "tls":
            channel = TlsChannel(sock, dptls.client_context(identity.key, plane.b.public_raw), server_side=False)
            channel.handshake()
        else:
            channel = PlainChannel(sock)
        channel.sendall(header)
        return channel.recv_exact(1)[0]
    except OSError:
        return None
    finally:
        sock.close()


def _header(plane: Plane, signer: Identity, *, claimed: Identity | None = None, dst_ip: str | None = None,
            service: str | None = None, **kw) -> bytes:
    return hdr.encode_header(signer.key, service_id=service or plane.svc, signer_peer_id=(claimed or signer).peer_id,
                             src=(plane.t.client_ip, 40000), dst=(dst_ip or plane.t.s1_ip, SERVER_PORT),
                             transparent=False, **kw)


def _assert_refused(plane: Plane, reason: str, verdict: int | None, server: str = "s1", before: int = 0) -> None:
    assert verdict in (hdr.STATUS_REFUSED, None), verdict
    plane.wait_refused("b", "target", reason)
    time.sleep(0.2)
    assert plane.servers[server].count() == before, "a refused stream reached the server"


def test_forged_header_signature_is_refused_and_nothing_reaches_the_server(plane):
    before = plane.servers["s1"].count()
    forged = bytearray(_header(plane, plane.a))
    forged[-1] ^= 0x01
    verdict = _tunnel_stream(plane, plane.a, bytes(forged))
    _assert_refused(plane, "bad_signature", verdict, before=before)


def test_replayed_header_is_refused_the_second_time(plane):
    before = plane.servers["s1"].count()
    header = _header(plane, plane.a)
    assert _tunnel_stream(plane, plane.a, header) == hdr.STATUS_OK
    deadline = time.monotonic() + 5
    while plane.servers["s1"].count() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert plane.servers["s1"].count() == before + 1
    verdict = _tunnel_stream(plane, plane.a, header)
    _assert_refused(plane, "replayed_nonce", verdict, before=before + 1)


def test_third_identity_is_refused(plane):
    before = plane.servers["s1"].count()
    verdict = _tunnel_stream(plane, plane.rogue, _header(plane, plane.rogue))
    reason = "tunnel_auth_failed" if plane.encryption == "tls" else "unknown_signer"
    _assert_refused(plane, reason, verdict, before=before)


def test_third_identity_claiming_to_be_the_source_is_refused(plane):
    before = plane.servers["s1"].count()
    verdict = _tunnel_stream(plane, plane.rogue, _header(plane, plane.rogue, claimed=plane.a))
    reason = "tunnel_auth_failed" if plane.encryption == "tls" else "bad_signature"
    _assert_refused(plane, reason, verdict, before=before)


def test_destination_outside_the_service_routes_is_refused(plane):
    before = plane.servers["s2"].count()
    verdict = _tunnel_stream(plane, plane.a, _header(plane, plane.a, dst_ip=plane.t.s2_ip))
    _assert_refused(plane, "destination_not_routed", verdict, server="s2", before=before)


# --- live reload and drain ----------------------------------------------------------------------------------------

def test_reload_adding_a_route_keeps_the_transfer_in_flight(plane):
    outcome: dict = {}

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=4 << 20, reply=1 << 20,
                                         chunk=1 << 16, pause=0.015)
        except BaseException as err:  # reported below
            outcome["error"] = err

    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        time.sleep(0.3)
        plane.extra_routes = [{"id": 2, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.200.0/24",
                               "priority": 100, "seq": 10}]
        plane.write_configs()
        for name in ("b", "a"):
            plane.reload(name)
        assert transfer.is_alive(), "the transfer ended before the reload; make it slower"
        now_routed = exchange(client(plane), (plane.t.s2_ip, SERVER_PORT), upload=1000, reply=1000)
        assert now_routed.intact()
        transfer.join(60)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"].intact()
    finally:
        transfer.join(60)
        plane.extra_routes = []
        plane.write_configs()
        for name in ("b", "a"):
            plane.reload(name)


def test_a_bad_config_on_reload_is_refused_and_the_old_one_keeps_serving(plane):
    good = plane.config_path("a").read_text()
    bad = json.loads(good)
    bad["services"][0]["routes"][0]["dest_cidr"] = "192.168.100.7/24"
    plane.config_path("a").write_text(json.dumps(bad))
    try:
        plane.procs["a"].send_signal(signal.SIGHUP)
        state = plane.wait_for("a", lambda s: s.get("config_error"), what="config error reported")
        assert "services[0].routes[0].dest_cidr" in state["config_error"]
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    finally:
        plane.config_path("a").write_text(good)
        plane.reload("a")


def test_a_changed_config_file_is_picked_up_without_a_signal(plane):
    before = plane.stats("b")["config_generation"]
    plane.write_configs()  # same content, new mtime
    plane.wait_for("b", lambda s: s["config_generation"] > before, what="reload on mtime change")


def test_tunnel_packets_carry_the_service_so_priority(plane):
    def packets() -> int:
        out = plane.t.agent_a.run("nft", "-j", "list", "counter", "inet", "arctic_dptest", "prio_1_20").stdout
        return next(o["counter"]["packets"] for o in json.loads(out)["nftables"] if "counter" in o)

    before = packets()
    assert exchange(client(plane), s1(plane), upload=100_000, reply=10).intact()
    assert packets() > before  # so_priority 0x10020 = HTB class 1:20 for the QoS engineer


def test_bind_address_is_the_source_the_server_sees(plane):
    t = plane.t
    if "192.168.100.10/24" not in t.agent_b.interfaces.get("eth-net100", []):
        t.agent_b.addr("eth-net100", "192.168.100.10/24")  # like a service interface's address
    plane.bind_address = "192.168.100.10"
    plane.write_configs()
    try:
        plane.reload("b")
        result = exchange(client(plane), s1(plane), upload=1000, reply=1000)
        assert result.intact() and result.server["peer"] == "192.168.100.10"
    finally:
        plane.bind_address = None
        plane.write_configs()
        plane.reload("b")


def test_a_new_tunnel_port_replaces_that_listener_only_and_keeps_relays(plane):
    outcome: dict = {}

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=2 << 20, reply=1 << 20, pause=0.01)
        except BaseException as err:
            outcome["error"] = err

    log_start = len(plane.log("a"))
    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        time.sleep(0.3)
        plane.tunnel_port = TUNNEL_PORT + 1
        plane.write_configs()
        for name in ("b", "a"):
            plane.reload(name)
        assert plane.stats("b")["listening"]["tunnel"] == f"0.0.0.0:{TUNNEL_PORT + 1}"
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
        transfer.join(60)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"].intact()
        reopened = [line for line in plane.log("a")[log_start:].splitlines()
                    if '"listening"' in line and '"tproxy4"' in line]
        assert not reopened, "the unchanged TPROXY listener must not be reopened"
    finally:
        transfer.join(60)
        plane.tunnel_port = TUNNEL_PORT
        plane.write_configs()
        for name in ("b", "a"):
            plane.reload(name)


def test_sigterm_drains_the_transfer_in_flight_then_exits(plane):
    outcome: dict = {}

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=2 << 20, reply=1 << 20, pause=0.02)
        except BaseException as err:
            outcome["error"] = err

    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        time.sleep(0.3)
        proc = plane.procs["a"]
        proc.send_signal(signal.SIGTERM)
        transfer.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"].intact()
        assert proc.wait(15) == 0
    finally:
        transfer.join(30)
        plane.stop("a")
        plane.start("a")


# --- throughput (informative) ----------------------------------------------------------------------------------------

def _iperf(plane: Plane, seconds: int = 5, runs: int = 3) -> float:
    t = plane.t
    server = t.s1.popen("iperf3", "-s", "-B", t.s1_ip, "-p", "5201", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        rates = []
        for _ in range(runs):
            out = t.cl.run("iperf3", "-c", t.s1_ip, "-p", "5201", "-t", seconds, "-J", timeout=seconds + 30)
            rates.append(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9)
        return statistics.median(rates)
    finally:
        server.terminate()
        server.wait(5)


@pytest.mark.slow
def test_single_flow_throughput_is_reported(plane):
    gbps = _iperf(plane)
    print(f"\n[dataplane throughput] encryption={plane.encryption}: {gbps:.2f} Gbit/s (median of 3 x 5 s)")
    floor = 5.0 if plane.encryption == "none" else 2.0  # anchors: splice pair 7.6-9.4, TLS pair ~3.1
    if gbps < floor:
        warnings.warn(f"single-flow {plane.encryption} throughput {gbps:.2f} Gbit/s is below {floor} Gbit/s",
                      stacklevel=1)
    assert gbps > 0


@pytest.mark.slow
def test_direct_routing_baseline_is_reported(lab_topology):
    """The same path routed by the kernel, no data plane: the yardstick for the figures above."""
    _lab, t, _servers = lab_topology
    t.agent_a.run("nft", "delete", "table", "inet", "arctic_dptest")
    t.enable_direct_routing()
    try:
        gbps = _iperf(type("P", (), {"t": t})())
        print(f"\n[dataplane throughput] kernel routing baseline: {gbps:.2f} Gbit/s (median of 3 x 5 s)")
    finally:
        t.disable_direct_routing()
        t.agent_a.run("nft", "-f", "-", input=AGENT_A_NFT)
