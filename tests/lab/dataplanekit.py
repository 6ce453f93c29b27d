"""The data-plane lab kit: both data planes of a transit lab, their configs, servers and a checksummed exchange.

Shared by the data-plane lab tests (``test_dataplane_end_to_end``, ``test_dataplane_sessions``). Topology:
``harness.transit`` (client 10.0.0.2 behind agent-a 198.18.0.1; servers s1 192.168.100.2 and s2 192.168.200.2
behind agent-b 198.18.0.2; ``ctl`` 198.18.0.250 plays an attacker on the peer segment). The canonical TPROXY
recipe is installed in a table named ``arctic_dptest`` inside the lab namespaces only (dataplane-anchors.md
section 1.5), so these tests exercise the data plane alone, without agents.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from arctic.cluster.identity import private_key_to_pem, public_key_to_b64
from arctic.ids import new_id
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import Lab, transit, wan_transit
from harness.servers import LabServer
from sessionclient import Identity, RawSession

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
    tcp flags != syn / fin,syn,rst,ack socket transparent 1 meta mark set 0x1 accept
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
    tcp flags != syn / fin,syn,rst,ack socket transparent 1 meta mark set 0x1 accept
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
             chunk: int = 1 << 16, pause: float = 0.0, read_pause: float = 0.0, timeout: float = 30.0,
             started: threading.Event | None = None) -> Exchange:
    """Connect, upload, half-close, read the server's reply to EOF. Raises on any connection error.

    ``pause`` / ``read_pause``: seconds between chunks sent / reads (a slower client keeps a stream alive longer).
    ``started`` is set once the first chunk is sent: the connection is then in the data plane's hands.
    """
    with sock:
        sock.settimeout(timeout)
        if src_ip:
            sock.bind((src_ip, 0))
        sock.connect(dst)
        payload = struct.pack("!Q", reply) + os.urandom(upload)
        for off in range(0, len(payload), chunk):
            sock.sendall(payload[off : off + chunk])
            if started is not None:
                started.set()
            if pause:
                time.sleep(pause)
        sock.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk_in := sock.recv(1 << 18):
            data += chunk_in
            if read_pause:
                time.sleep(read_pause)
    line, _, body = bytes(data).partition(b"\n")
    return Exchange(hashlib.sha256(payload).hexdigest(), len(payload), json.loads(line),
                    hashlib.sha256(body).hexdigest(), len(body))


# --- identities, configs and processes ----------------------------------------------------------------------------

def new_identity() -> Identity:
    return Identity(new_id("peer"), Ed25519PrivateKey.generate())


class Plane:
    """Both data-plane processes of one encryption mode, with their configs, servers and identities."""

    def __init__(self, lab: Lab, topo, encryption: str, *, workers: int = 2, transport: str = "tcp",
                 **settings) -> None:
        """``transport`` of every service; ``settings``: more data-plane config keys (``bulk_lanes``, ...)."""
        self.lab, self.t, self.encryption = lab, topo, encryption
        self.workers, self.transport, self.settings = workers, transport, settings
        self.servers: dict[str, DigestServer] = {}
        self.dir = lab.run_dir / f"dp-{encryption}-{secrets.token_hex(3)}"
        self.dir.mkdir()
        self.a, self.b = new_identity(), new_identity()
        self.rogue = new_identity()  # a third identity nobody configured
        self.dead, self.no_agent = new_identity(), new_identity()
        self.svc, self.svc_transparent = new_id("svc"), new_id("svc")
        self.svc_dead, self.svc_no_agent = new_id("svc"), new_id("svc")
        self.procs: dict[str, subprocess.Popen] = {}
        for ident, name in ((self.a, "a"), (self.b, "b")):
            key_file = self.dir / f"{name}.key"
            key_file.write_bytes(private_key_to_pem(ident.key))
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
            {"id": self.svc, "source_peer_id": a, "target_peer_id": b, "transport_type": self.transport,
             "fully_transparent": False, "bind_address": self.bind_address, "so_priority": 0x10020,
             "routes": [route, route6, *self.extra_routes]},
            {"id": self.svc_transparent, "source_peer_id": a, "target_peer_id": b, "transport_type": self.transport,
             "fully_transparent": True, "bind_address": None, "so_priority": 0,
             "routes": [{"id": 1, "source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 100,
                         "seq": 2},
                        {"id": 2, "source_cidr": f"{TRANSPARENT_CLIENT6}/128", "dest_cidr": "fd00:100::/64",
                         "seq": 6}]},
            {"id": self.svc_dead, "source_peer_id": a, "target_peer_id": self.dead.peer_id,
             "transport_type": self.transport,
             "routes": [{"id": 1, "dest_cidr": f"{DEAD_DST}/32", "seq": 3}]},
            {"id": self.svc_no_agent, "source_peer_id": a, "target_peer_id": self.no_agent.peer_id,
             "transport_type": self.transport, "routes": [{"id": 1, "dest_cidr": f"{NO_AGENT_DST}/32", "seq": 4}]},
        ]

    def config(self, name: str) -> dict:
        me = self.a if name == "a" else self.b
        peers = {p.peer_id: {"public_key": public_key_to_b64(p.key.public_key()), "tunnel_address": ip}
                 for p, ip in ((self.a, self.t.agent_a_ip), (self.b, self.t.agent_b_ip),
                               (self.dead, DEAD_PEER_IP), (self.no_agent, NO_AGENT_IP))}
        return {"local_peer_id": me.peer_id, "identity_key_file": f"{name}.key", "tproxy_port": TPROXY_PORT,
                "tunnel_port": self.tunnel_port, "tunnel_bind": "0.0.0.0", "encryption": self.encryption,
                "drain_seconds": 10, "connect_timeout": 1.0, "peers": peers, "services": self.services(),
                "workers": self.workers, **self.settings}

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

    def sessions(self, name: str, role: str | None = None) -> list[dict]:
        """The data plane's sessions as its stats file lists them (``role``: "client" or "server")."""
        return [s for s in self.stats(name).get("sessions", []) if role is None or s.get("role") == role]

    def raw_session(self, me: Identity, *, service_id: str | None = None, tls_identity: Identity | None = None,
                    slot: int = 0) -> RawSession:
        """A hand-driven session from ``ctl`` to agent-b's tunnel port as ``me`` (not handshaken yet)."""
        sock = lab_socket(self.t.ctl)
        sock.settimeout(5)
        sock.connect((self.t.agent_b_ip, self.tunnel_port))
        return RawSession(sock, me, self.b, service_id=service_id or self.svc, encrypted=self.encryption == "tls",
                          tls_identity=tls_identity, slot=slot)

    def wait_refused(self, name: str, side: str, reason: str) -> None:
        """The stats file is rewritten every second: wait until it counts a refusal for ``reason``."""
        self.wait_for(name, lambda s: s["by_side"][side]["refused"].get(reason, 0) >= 1, what=f"refusal {reason}")




def build_topology(lab: Lab, *, wan: bool = False):
    """The transit lab with IPv6, a transparent-mode client address and the TPROXY recipe; returns (t, servers).

    ``wan``: agent-a <-> agent-b crosses the emulated WAN (``harness.wan_transit``; ``t.wan`` sets delay and
    loss), which is IPv4 only between the agents (the client and server LANs keep IPv6).
    """
    t = wan_transit(lab) if wan else transit(lab)
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
    return t, servers


def client(plane: Plane) -> socket.socket:
    return lab_socket(plane.t.cl)


def s1(plane: Plane) -> tuple[str, int]:
    return (plane.t.s1_ip, SERVER_PORT)


def server_reset_reaches_client(plane: Plane, timeout: float) -> bool:
    """A server on s1 aborts (RST) the first connection after reading its first bytes: does the client through
    the plane see a reset (True), rather than a clean end (False)? Within ``timeout`` seconds."""
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
        sock.settimeout(timeout)
        sock.connect((t.s1_ip, SERVER_PORT + 1))
        sock.sendall(b"hello")
        while sock.recv(1024):
            pass
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.close()
        server.join(timeout)
        listener.close()
