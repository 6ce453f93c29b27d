"""Services carry real TCP connections: two real agents, their reconcilers, data planes and kernel state.

Topology ``harness.transit``: client ``cl`` 10.0.0.2 (and 10.1.0.50) -> agent-a 198.18.0.1 -> agent-b 198.18.0.2 ->
servers s1 192.168.100.2 and s2 192.168.200.2. Agent-a has no route to the server LANs, so a connection reaches a
server only when Arctic carries it. Both agents are bootstrapped with one licence issuer and joined; every change
goes through the REST API from the ``ctl`` host, exactly as an operator would make it.

Each server answers "whoami": the peer address it saw, a SHA-256 of what it received, and the bytes echoed back.
One lab and one cluster serve the whole module; after each test every service is deleted and both peers are
checked to be back to a clean kernel, so tests stay independent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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

import pytest
from harness import Host, Lab, http, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair, wait_until
from harness.servers import LabServer

pytestmark = pytest.mark.lab

PORT = 9000
CLIENT, CLIENT_B = "10.0.0.2", "10.1.0.50"
S1, S2 = "192.168.100.2", "192.168.200.2"
AGENT_B_NET100 = "192.168.100.1"
SERVICE_IP = "192.168.100.10"
ARCTIC = str(Path(sys.executable).parent / "arctic")


# --- the servers --------------------------------------------------------------------------------------------

class WhoamiServer(LabServer):
    """Reads to EOF, then answers one JSON line (who connected, what arrived) followed by the bytes echoed back."""

    def __init__(self, host: Host, ip: str, name: str) -> None:
        self.name = name
        super().__init__(host, ip, PORT)

    def handle(self, conn: socket.socket, peer: tuple) -> None:
        data = bytearray()
        while chunk := conn.recv(1 << 16):
            data += chunk
        line = json.dumps({"server": self.name, "peer": peer[0], "received": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()})
        conn.sendall(line.encode() + b"\n" + data)


def talk(sock: socket.socket, dst: str, payload: bytes, *, src: str | None = None, timeout: float = 5.0,
         pace: Callable[[int], None] | None = None) -> dict:
    """Connect, send ``payload`` (optionally paced chunk by chunk), half-close, read the answer; check the echo."""
    with sock:
        sock.settimeout(timeout)
        if src:
            sock.bind((src, 0))
        sock.connect((dst, PORT))
        for offset in range(0, len(payload), 1 << 15):
            sock.sendall(payload[offset:offset + (1 << 15)])
            if pace is not None:
                pace(offset)
        answer, echo = whoami_answer(sock)
    answer["intact"] = (answer["sha256"] == hashlib.sha256(payload).hexdigest() and echo == payload)
    return answer


def whoami_answer(sock: socket.socket) -> tuple[dict, bytes]:
    """Half-close, read the WhoamiServer's answer to EOF: its JSON line and the bytes it echoed."""
    sock.shutdown(socket.SHUT_WR)
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    line, _, echo = bytes(data).partition(b"\n")
    return json.loads(line), echo


# --- the cluster --------------------------------------------------------------------------------------------

@dataclass
class Cluster(ArcticPair):
    """The ArcticPair (API from ctl, tokens, services, stats) plus the whoami servers and kernel inspection."""

    servers: list[WhoamiServer] = field(default_factory=list)

    @property
    def lab(self) -> Lab:
        return self.t.lab

    @property
    def hosts(self) -> dict[str, Host]:
        return {"a": self.t.agent_a, "b": self.t.agent_b}

    # -- what the hosts see ------------------------------------------------------------------------------------------
    def connect(self, dst: str, *, src: str | None = None, payload: bytes = b"hello", timeout: float = 5.0) -> dict:
        sock = self.t.cl.call(socket.socket)
        return talk(sock, dst, payload, src=src, timeout=timeout)

    def reaches(self, dst: str, *, src: str | None = None) -> bool:
        try:
            return self.connect(dst, src=src, timeout=3)["intact"]
        except (OSError, ValueError):
            return False

    def sh(self, name: str, *argv: str, check: bool = True) -> str:
        return self.hosts[name].run(*argv, check=check).stdout

    def data_dir(self, name: str):
        return self.agents[name].dir / "data"

    def dataplane_pid(self, name: str) -> int | None:
        try:
            return json.loads((self.data_dir(name) / "dataplane.pid").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def clean(self, name: str) -> list[str]:
        """What Arctic state is left on a peer (empty = none)."""
        left = []
        if "arctic" in self.sh(name, "nft", "list", "ruleset"):
            left.append("nft table inet arctic")
        if "61080" in self.sh(name, "ip", "rule") + self.sh(name, "ip", "-6", "rule"):
            left.append("ip rule -> table 61080")
        if self.sh(name, "ip", "route", "show", "table", "61080", check=False).strip():  # error = no table
            left.append("routes in table 61080")
        if "alias arctic" in self.sh(name, "ip", "-d", "link"):
            left.append("service MACVLAN")
        if " 61: " in self.sh(name, "tc", "qdisc", "show"):
            left.append("tc root 61:")
        if self.dataplane_config(name).get("services"):
            left.append("services in dataplane.json")
        if self.sh(name, "ss", "-Huan", "( sport = :61000 or dport = :61000 )").strip():
            left.append("a UDP socket of a KCP session or listener")
        return left


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with root_namespace_untouched("the service traffic tests"), Lab(prefix="arsvc") as lab:
        t = transit(lab)
        t.client_addr(CLIENT_B, 16)
        config = {"reconcile_interval": 5, "log_level": "info",
                  "dataplane": {"keep_on_stop": True, "drain_seconds": 2}}  # a control-plane restart keeps relays
        with Cluster.start(t, extra_config=config,
                           per_agent={"b": {"lan_interface": "eth-net100"}}) as c:  # b's service interfaces: s1's LAN
            c.servers = [WhoamiServer(t.s1, S1, "s1"), WhoamiServer(t.s2, S2, "s2")]
            try:
                yield c
            finally:
                for server in c.servers:
                    server.close()


@pytest.fixture(autouse=True)
def clean_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """Every test starts and ends with no services, and both peers' kernels free of Arctic state."""
    yield cluster
    for svc in cluster.api("GET", "/v1/services"):
        cluster.api("DELETE", f"/v1/services/{svc['id']}")
    for name in ("a", "b"):
        wait_until(lambda name=name: not cluster.clean(name), what=f"agent-{name} to be clean")


def comments(listing: str) -> list[str]:
    return [ln.split('comment "')[1].rstrip('"') for ln in listing.splitlines() if "tproxy" in ln]


# --- routes decide what is carried --------------------------------------------------------------------------

def test_a_service_carries_connections_only_once_a_destination_route_exists(cluster):
    sid = cluster.create_service()
    for name in ("a", "b"):  # both data planes know the service: still nothing must be carried
        wait_until(lambda name=name: any(s["id"] == sid for s in cluster.dataplane_config(name).get("services", [])),
                   what=f"agent-{name}'s data plane to have the service")
    assert not cluster.reaches(S1), "a service without routes must not carry traffic"

    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    answer = wait_until(lambda: cluster.reaches(S1) and cluster.connect(S1), what="s1 through the service")
    assert answer["intact"] and answer["server"] == "s1"
    assert answer["peer"] == AGENT_B_NET100  # re-originated by agent-b from its own address
    assert not cluster.reaches(S2)  # 192.168.200.0/24 has no route

    listing = cluster.sh("a", "nft", "list", "ruleset")
    assert "ip daddr 192.168.100.0/24 tcp flags syn / fin,syn,rst,ack tproxy ip to :61080" in listing
    assert comments(listing) == [f"arctic {sid} route 1"]
    assert "fwmark 0x1a0000/0xff0000 lookup 61080" in cluster.sh("a", "ip", "rule")
    assert [s["id"] for s in cluster.dataplane_config("b")["services"]] == [sid]  # the target admits it
    shown = cluster.api("GET", "/v1/plan")
    assert shown["in_sync"] and shown["diff"] == "" and f"arctic {sid} route 1" in shown["nftables"]


def test_source_only_and_source_plus_destination_routes(cluster):
    sid = cluster.create_service()
    cluster.add_routes(sid, {"source_cidr": "10.1.0.0/16", "priority": 100},
                       {"source_cidr": "10.0.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 100})
    wait_until(lambda: cluster.reaches(S2, src=CLIENT_B), what="source-only route to carry 10.1.0.50 -> s2")
    assert cluster.connect(S1, src=CLIENT_B)["peer"] == AGENT_B_NET100  # any destination for that source
    assert cluster.reaches(S1, src=CLIENT)  # both-CIDR route
    assert not cluster.reaches(S2, src=CLIENT)  # 10.0.0.2 -> 192.168.200.0/24: no route covers it
    listing = cluster.sh("a", "nft", "list", "ruleset")
    assert "ip saddr 10.1.0.0/16 tcp flags syn / fin,syn,rst,ack tproxy" in listing  # first SYNs only
    assert "ip saddr 10.0.0.0/16 ip daddr 192.168.100.0/24 tcp flags syn / fin,syn,rst,ack tproxy" in listing


def test_the_seed_precedence_table_decides_which_service_carries_a_connection(cluster):
    general, specific = cluster.create_service(name="general"), cluster.create_service(name="specific")
    cluster.add_routes(general, {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.0.0/16", "priority": 100})
    cluster.add_routes(specific, {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100})
    cluster.add_routes(general, {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 200})
    wait_until(lambda: len(comments(cluster.sh("a", "nft", "list", "ruleset"))) == 3, what="three rules")
    # the seed's order: 10.1/16 -> /24 (prio 200), then 10/8 -> /24, then 10/8 -> 192.168/16
    assert comments(cluster.sh("a", "nft", "list", "ruleset")) == [
        f"arctic {general} route 2", f"arctic {specific} route 1", f"arctic {general} route 1"]
    wait_until(lambda: cluster.reaches(S1), what="traffic to flow")

    def carried() -> dict[str, int]:
        """Connections per service on agent-a, from counters every worker took after everything so far ended."""
        since = time.time()

        def fresh() -> dict | None:
            st = cluster.stats("a")
            reports = [w.get("reported_at") or 0 for w in st.get("workers", [])]
            return st if reports and min(reports) > since and st["active_connections"] == 0 else None

        stats = wait_until(fresh, what="fresh data-plane stats from every worker")
        return {sid: stats.get("services", {}).get(sid, {}).get("source", 0) for sid in (general, specific)}

    def expect_carrier(connect: Callable[[], dict], carrier: str) -> None:
        before = carried()
        assert connect()["intact"]
        after = carried()
        other = general if carrier == specific else specific
        assert {sid: after[sid] - before[sid] for sid in after} == {carrier: 1, other: 0}

    expect_carrier(lambda: cluster.connect(S1, src=CLIENT), specific)  # /24 destination beats /16
    expect_carrier(lambda: cluster.connect(S1, src=CLIENT_B), general)  # longer source at equal destination
    expect_carrier(lambda: cluster.connect(S2, src=CLIENT), general)  # only the /16 destination covers s2


def test_route_update_and_delete_apply_live(cluster):
    sid = cluster.create_service()
    (rid,) = cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    wait_until(lambda: cluster.reaches(S1), what="s1 through the service")

    dry = cluster.api("POST", "/v1/plan", json={"changes": [
        {"op": "route.update", "service_id": sid, "route_id": rid, "body": {"dest_cidr": "192.168.200.0/24"}}]})
    diff = dry["kernel_diff"][cluster.peer_id("a")]
    assert dry["valid"] and "+\t\tip daddr 192.168.200.0/24" in diff
    assert "-\t\tip daddr 192.168.100.0/24" in diff
    assert "192.168.200.0/24" not in cluster.sh("a", "nft", "list", "ruleset")  # a dry run changes nothing

    cluster.api("PUT", f"/v1/services/{sid}/routes/{rid}", json={"dest_cidr": "192.168.200.0/24"})
    wait_until(lambda: cluster.reaches(S2), what="the updated route to carry s2")
    assert not cluster.reaches(S1)

    cluster.api("DELETE", f"/v1/services/{sid}/routes/{rid}")
    wait_until(lambda: not cluster.reaches(S2), what="the deleted route to stop carrying")
    assert comments(cluster.sh("a", "nft", "list", "ruleset")) == []
    assert cluster.dataplane_config("b")["services"][0]["routes"] == []


# --- service interface, Transparent Mode, explicit source ---------------------------------------------------

def test_requires_interface_re_originates_from_the_desired_address(cluster):
    sid = cluster.create_service(requires_interface=True, desired_ipv4_cidr=f"{SERVICE_IP}/24")
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    answer = wait_until(lambda: cluster.reaches(S1) and cluster.connect(S1), what="s1 through the interface")
    assert answer["peer"] == SERVICE_IP

    shown = wait_until(lambda: (s := cluster.api("GET", f"/v1/services/{sid}", on="b"))["interface_name"] and s,
                       what="agent-b to record its interface")
    link = cluster.sh("b", "ip", "-d", "link", "show", "dev", shown["interface_name"])
    assert "macvlan mode bridge" in link and f"alias arctic {sid}" in link
    assert shown["interface_mac"] in link and shown["interface_ipv4_cidr"] == f"{SERVICE_IP}/24"
    assert f"inet {SERVICE_IP}/24" in cluster.sh("b", "ip", "addr", "show", "dev", shown["interface_name"])
    assert cluster.dataplane_config("b")["services"][0]["bind_address"] == SERVICE_IP
    interface = ("interface_name", "interface_mac", "interface_ipv4_cidr", "interface_ipv6_cidr")
    on_source = cluster.api("GET", f"/v1/services/{sid}", on="a")  # any agent answers with the target's facts
    listed = next(x for x in cluster.api("GET", "/v1/services", on="a") if x["id"] == sid)
    assert {k: on_source[k] for k in interface} == {k: listed[k] for k in interface} == {k: shown[k] for k in interface}


@contextlib.contextmanager
def dhcp_server(cluster: Cluster) -> Iterator[Path]:
    """dnsmasq on s1, the DHCP server of agent-b's service LAN (192.168.100.50-60); yields its lease file."""
    leases = cluster.lab.run_dir / "dnsmasq-service.leases"
    with (cluster.lab.run_dir / "dnsmasq-service.log").open("wb") as log:
        dnsmasq = cluster.t.s1.popen(
            "dnsmasq", "--no-daemon", "--port=0", "--interface=eth-net100", "--bind-interfaces",
            "--dhcp-range=192.168.100.50,192.168.100.60,255.255.255.0,2m", f"--dhcp-leasefile={leases}",
            "--pid-file", "--user=root", "--group=root", "--dhcp-authoritative", stdout=log, stderr=subprocess.STDOUT)
    try:
        yield leases
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(10)


def test_requires_interface_without_a_desired_address_takes_one_by_dhcp_and_connections_leave_from_it(cluster):
    with dhcp_server(cluster) as leases:
        sid = cluster.create_service(requires_interface=True)
        cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
        shown = wait_until(lambda: (s := cluster.api("GET", f"/v1/services/{sid}", on="b"))["interface_ipv4_cidr"]
                           and s, timeout=40, what="agent-b's service interface to get a DHCP lease")
        address = shown["interface_ipv4_cidr"].split("/")[0]
        assert 50 <= int(address.rsplit(".", 1)[1]) <= 60, f"{address} is not from the DHCP server's range"
        # the data plane learns the leased address from the same reconcile run that recorded it (then reloads)
        wait_until(lambda: cluster.reaches(S1) and cluster.connect(S1)["peer"] == address, timeout=10,
                   what="connections to leave from the leased address")
        link = cluster.sh("b", "ip", "-d", "link", "show", "dev", shown["interface_name"])
        assert "macvlan mode bridge" in link and shown["interface_mac"] in link
        assert "dynamic" in cluster.sh("b", "ip", "addr", "show", "dev", shown["interface_name"])
        assert address in leases.read_text() and shown["interface_mac"].lower() in leases.read_text().lower()


# --- what `arctic services create --requires-interface` prints (the real CLI, from ctl) ----------------------

def arctic_cli(cluster: Cluster, *args: str, on: str = "a") -> subprocess.CompletedProcess:
    """The real ``arctic`` in the ctl namespace (the operator's workstation), talking to agent-``on``."""
    env = [f"ARCTIC_URL={cluster.agents[on].url}", f"ARCTIC_TOKEN={cluster.token(on)}",
           f"ARCTIC_CONFIG={cluster.lab.run_dir / 'cli' / 'config.yaml'}"]
    proc = cluster.t.ctl.run("env", *env, ARCTIC, *args, check=False, timeout=90)
    assert proc.returncode == 0, f"arctic {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def created_interface(proc: subprocess.CompletedProcess, address: str) -> tuple[str, str]:
    """(name, MAC) from create's last line: ``Interface <name> on agent-b: MAC <mac>, IPv4 <address>``."""
    match = re.fullmatch(rf"Interface (arc\S+) on agent-b: MAC (\S+), IPv4 {re.escape(address)}",
                         proc.stdout.splitlines()[-1])
    assert match, proc.stdout
    return match[1], match[2]


def test_cli_create_waits_for_agent_b_to_create_the_interface_and_prints_its_mac_and_address(cluster):
    proc = arctic_cli(cluster, "services", "create", "--target-peer", cluster.peer_id("b"), "--requires-interface",
                      "--desired-ipv4", f"{SERVICE_IP}/24")
    name, mac = created_interface(proc, f"{SERVICE_IP}/24")
    assert "Still waiting" not in proc.stderr and re.search(r"^Interface State:\s+up$", proc.stdout, re.M)
    link = cluster.sh("b", "ip", "-d", "link", "show", "dev", name)  # what agent-b's kernel has
    assert "macvlan mode bridge" in link and f"link/ether {mac.lower()} " in link
    assert f"inet {SERVICE_IP}/24" in cluster.sh("b", "ip", "addr", "show", "dev", name)


def test_cli_create_without_an_address_waits_for_the_dhcp_lease_and_prints_the_leased_address(cluster):
    with dhcp_server(cluster) as leases:
        proc = arctic_cli(cluster, "services", "create", "--target-peer", cluster.peer_id("b"),
                          "--requires-interface")
        address = re.search(r"IPv4 (192\.168\.100\.\d+)/24$", proc.stdout.splitlines()[-1])
        assert address and 50 <= int(address[1].rsplit(".", 1)[1]) <= 60, proc.stdout
        name, mac = created_interface(proc, f"{address[1]}/24")
        assert address[1] in leases.read_text() and mac.lower() in leases.read_text().lower()
        assert f"inet {address[1]}/24" in cluster.sh("b", "ip", "addr", "show", "dev", name)


def test_without_a_dhcp_server_the_cli_shows_that_the_interface_waits_for_a_lease_and_why(cluster):
    proc = arctic_cli(cluster, "services", "create", "--target-peer", cluster.peer_id("b"), "--requires-interface",
                      "--no-wait", "-j")
    sid = json.loads(proc.stdout)["id"]
    svc = wait_until(lambda: (s := cluster.api("GET", f"/v1/services/{sid}"))["interface_state"] == "waiting_for_lease"
                     and s, what="agent-b to create the interface and start its DHCP client")
    shown = arctic_cli(cluster, "services", "get", sid).stdout  # through agent-a: agent-b's words
    assert re.search(r"^Interface State:\s+waiting_for_lease$", shown, re.M)
    detail = re.search(r"^Interface Detail:\s+(.*)$", shown, re.M)[1]
    assert detail == (f"the DHCP client on {svc['interface_name']} has no lease yet: no DHCP server on the network"
                      " of eth-net100 has answered so far")
    assert re.search(rf"^Interface MAC:\s+{re.escape(svc['interface_mac'])}$", shown, re.M)


@pytest.mark.parametrize("transport", ["tcp", "kcp"])
def test_fully_transparent_service_shows_the_client_address_to_the_server(cluster, transport):
    """The transport is only what runs between the peers: interface, Transparent Mode and routes work the same."""
    sid = cluster.create_service(transport_type=transport, requires_interface=True, fully_transparent=True,
                                 desired_ipv4_cidr=f"{SERVICE_IP}/24")
    cluster.add_routes(sid, {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100})
    cluster.t.s1.route("10.0.0.0/8", via=AGENT_B_NET100)  # the server routes client prefixes back via agent-b
    try:
        answer = wait_until(lambda: cluster.reaches(S1) and cluster.connect(S1, payload=os.urandom(300_000)),
                            what=f"a transparent connection over {transport}")
        assert answer["intact"] and answer["peer"] == CLIENT
        listing = cluster.sh("b", "nft", "list", "ruleset")  # the target delivers replies to its spoofing socket
        assert "socket transparent 1" in listing
        assert "fwmark 0x1a0000/0xff0000 lookup 61080" in cluster.sh("b", "ip", "rule")
        shown = cluster.api("GET", f"/v1/services/{sid}", on="b")
        assert "macvlan" in cluster.sh("b", "ip", "-d", "link", "show", "dev", shown["interface_name"])
        if transport == "kcp":
            def kcp_sessions_up() -> list[dict] | None:  # each worker reports every second: wait for all of them
                kcp = [s for s in cluster.stats("a")["sessions"] if s["service"] == sid and s["transport"] == "kcp"]
                return kcp if kcp and all(s["state"] == "up" for s in kcp) else None

            wait_until(kcp_sessions_up, what="every worker's KCP session of the service up")
            assert "kcp" in cluster.stats("b")["listening"]  # the target serves KCP while a KCP service comes to it
    finally:
        cluster.t.s1.unroute("10.0.0.0/8")


def test_a_service_created_through_its_target_with_an_explicit_source_peer(cluster):
    sid = cluster.create_service(on="b", source_peer_id=cluster.peer_id("a"), target_peer_id=cluster.peer_id("b"))
    assert cluster.api("GET", f"/v1/services/{sid}", on="b")["source_peer_id"] == cluster.peer_id("a")
    cluster.add_routes(sid, {"dest_cidr": "192.168.200.0/24", "priority": 100}, on="b")  # forwarded to agent-a
    answer = wait_until(lambda: cluster.reaches(S2) and cluster.connect(S2), what="s2 through the service")
    assert answer["server"] == "s2" and answer["peer"] == "192.168.200.1"
    assert f"arctic {sid} route 1" in cluster.sh("a", "nft", "list", "ruleset")


# --- deleting leaves nothing --------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "kcp"])
def test_deleting_a_service_removes_its_routes_interface_rules_shaping_and_config(cluster, transport):
    sid = cluster.create_service(transport_type=transport, requires_interface=True,
                                 desired_ipv4_cidr=f"{SERVICE_IP}/24", bandwidth_limit_mbps=200)
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100},
                       {"source_cidr": "10.1.0.0/16", "priority": 50})
    wait_until(lambda: cluster.reaches(S1), what="s1 through the service")
    assert " 61: " in cluster.sh("a", "tc", "qdisc", "show") and " 61: " in cluster.sh("b", "tc", "qdisc", "show")
    slots = cluster.dataplane_config("a")["services"][0]["so_priorities"]
    assert len(slots) == 16 and all(p >> 16 == 0x61 for p in slots)  # HTB leaves 61:xx select the service

    cluster.api("DELETE", f"/v1/services/{sid}")
    for name in ("a", "b"):
        wait_until(lambda name=name: not cluster.clean(name), what=f"agent-{name} to remove every trace")
        assert cluster.api("GET", "/v1/services", on=name) == []
    assert not cluster.reaches(S1) and not cluster.reaches(S2, src=CLIENT_B)


# --- robustness ---------------------------------------------------------------------------------------------

def stream_until(sock: socket.socket, stop: threading.Event, *, extra_chunks: int = 10,
                 max_chunks: int = 600) -> dict:
    """Send 32 KiB chunks every 50 ms until ``stop`` is set (plus ``extra_chunks``), then check the echo."""
    digest, sent, after = hashlib.sha256(), bytearray(), 0
    with sock:
        sock.settimeout(30)
        sock.connect((S1, PORT))
        for _ in range(max_chunks):  # bounded: at most 30 s of sending
            chunk = os.urandom(1 << 15)
            sock.sendall(chunk)
            digest.update(chunk)
            sent += chunk
            if stop.is_set():
                after += 1
                if after >= extra_chunks:
                    break
            time.sleep(0.05)
        answer, echo = whoami_answer(sock)
    answer["intact"] = answer["sha256"] == digest.hexdigest() and echo == sent
    answer["sent_after_restart"] = after
    return answer


@pytest.mark.parametrize("transport", ["tcp", "kcp"])
def test_restarting_the_control_plane_and_changing_routes_do_not_interrupt_a_transfer(cluster, transport):
    sid = cluster.create_service(transport_type=transport)
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    wait_until(lambda: cluster.reaches(S1), what="s1 through the service")
    pid = cluster.dataplane_pid("a")
    table = cluster.sh("a", "nft", "-a", "list", "table", "inet", "arctic")
    restarted = threading.Event()
    result: dict = {}

    def transfer() -> None:
        try:
            result.update(stream_until(cluster.t.cl.call(socket.socket), restarted))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = repr(err)

    thread = threading.Thread(target=transfer)
    thread.start()
    try:
        wait_until(lambda: cluster.stats("a").get("active_connections", 0) >= 1, what="the transfer to be relayed")
        cluster.agents["a"].restart()
        wait_until(lambda: http(cluster.t.ctl, "GET", f"{cluster.agents['a'].url}/readyz").json()["checks"]
                   .get("dataplane") == "ok", what="agent-a ready again")
        assert cluster.sh("a", "nft", "-a", "list", "table", "inet", "arctic") == table  # not even re-applied
        generation = cluster.stats("a")["config_generation"]
        cluster.add_routes(sid, {"dest_cidr": "192.168.200.0/24", "priority": 90})  # a live change: a reload
        wait_until(lambda: cluster.stats("a")["config_generation"] > generation, what="the data plane to reload")
    finally:
        restarted.set()
        thread.join(60)
    assert "error" not in result, result
    assert result["intact"] and result["sent_after_restart"] >= 10, result
    assert cluster.dataplane_pid("a") == pid, "the data plane must be adopted, not replaced"
    assert "adopted the running data plane" in cluster.agents["a"].log_text()


def test_a_thousand_concurrent_connections_arrive_intact(cluster):
    sid = cluster.create_service()
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    wait_until(lambda: cluster.reaches(S1), what="s1 through the service")
    count, size = 1000, 32 * 1024
    socks = cluster.t.cl.call(lambda: [socket.socket() for _ in range(count)])
    payloads = [os.urandom(size) for _ in range(count)]
    connected, go = threading.Barrier(count + 1, timeout=60), threading.Event()

    def one(i: int) -> bool:
        with socks[i] as sock:
            sock.settimeout(60)
            sock.connect((S1, PORT))
            connected.wait()
            go.wait(60)
            sock.sendall(payloads[i])
            answer, echo = whoami_answer(sock)
        return answer["sha256"] == hashlib.sha256(payloads[i]).hexdigest() and echo == payloads[i]

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        try:
            connected.wait()  # every connection is open before any data moves
            peak = wait_until(lambda: (n := cluster.stats("a").get("active_connections", 0)) >= count and n,
                              what=f"{count} concurrent relays on agent-a")
        finally:
            go.set()
        results = [f.result(timeout=120) for f in futures]
    assert peak >= count
    assert sum(results) == count, f"{count - sum(results)} connections arrived damaged"
    wait_until(lambda: cluster.stats("b").get("services", {}).get(sid, {}).get("target", 0) >= count,
               what="agent-b to count every connection for the service")


def test_cluster_status_shows_the_data_plane_sessions_with_each_peer(cluster):
    """Sessions are opened ahead of need and visible per peer: state, RTT, streams, reconnects."""
    sid = cluster.create_service()
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    wait_until(lambda: cluster.reaches(S1), what="s1 through the service")

    def session_with_b() -> dict | None:
        rows = cluster.api("GET", "/v1/cluster/status")["peers"]
        row = next(r for r in rows if r["peer_id"] == cluster.peer_id("b"))
        session = row.get("session")
        counted = session and session["state"] == "up" and session["rtt_ms"] is not None and session["streams_total"]
        return session if counted else None  # the workers report each second: wait until the stream is counted

    session = wait_until(session_with_b, what="agent-a's sessions with agent-b up, with an RTT and the stream")
    assert session["sessions_up"] >= 1 and session["streams_total"] >= 1 and session["reconnects"] == 0, session
    local = next(r for r in cluster.api("GET", "/v1/cluster/status")["peers"] if r["is_local"])
    assert local["session"] is None  # no session with oneself


# --- what an operator sees: shadowed routes, the tproxymgr lines ------------------------------------------------

def test_a_route_shadowed_by_another_service_s_route_says_so_and_only_the_winner_carries(cluster):
    first = cluster.create_service(name="first")
    second = cluster.create_service(name="second")
    [winner] = cluster.add_routes(first, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    [loser] = cluster.add_routes(second, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    listed = cluster.api("GET", f"/v1/services/{second}/routes")
    assert [(r["id"], r["state"], r["shadowed_by"]) for r in listed] == [
        (loser, "shadowed", {"service_id": first, "route_id": winner})]
    assert [r["state"] for r in cluster.api("GET", f"/v1/services/{first}/routes")] == ["active"]
    wait_until(lambda: cluster.reaches(S1), what="the winning route to carry")
    assert cluster.carried_by(first) >= 1 and cluster.carried_by(second) == 0


def test_the_seed_s_grep_tproxymgr_finds_the_data_plane_and_shaping_changes_of_a_service(cluster):
    """The seed's steps for "Bandwidth Not Being Enforced" and for config updates after a delete:
    ``journalctl -u arctic | grep tproxymgr``. The lab agents write the same lines to their log file."""

    def lines(name: str, sid: str) -> list[dict]:
        found = [json.loads(line) for line in cluster.agents[name].log_text().splitlines() if "tproxymgr" in line]
        return [line for line in found if line.get("service_id") == sid]

    def logged(sid: str, msg: str, **fields: object) -> None:
        for name in ("a", "b"):  # both peers: each shapes what it sends and tells its own data plane
            wait_until(lambda name=name: any(line["msg"] == msg and fields.items() <= line.items()
                                             for line in lines(name, sid)),
                       what=f"agent-{name}'s tproxymgr line {msg!r} {fields}")

    sid = cluster.create_service(bandwidth_limit_mbps=50)
    cluster.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
    logged(sid, "data-plane config updated", change="added")
    cluster.api("PUT", f"/v1/services/{sid}", json={"bandwidth_limit_mbps": 20})
    logged(sid, "service shaping changed", bandwidth_limit_mbps=20, previous_mbps=50)
    cluster.api("DELETE", f"/v1/services/{sid}")
    logged(sid, "data-plane config updated", change="removed")
