"""The data plane end to end: client -> agent-a (TPROXY) -> session -> agent-b -> server, real kernel.

Topology and processes: ``dataplanekit`` (the transit lab, both data planes started by hand with a config each,
the TPROXY recipe in a table of the lab namespaces). Every test runs for ``encryption: none`` and ``tls``.
Session-specific behaviour (warm sessions, flow control, cuts, 10,000 streams) is in ``test_dataplane_sessions``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from arctic.dataplane import frames
from arctic.dataplane.transitions import TARGET_WAIT
from dataplanekit import (
    CLIENT6,
    DEAD_DST,
    NO_AGENT_DST,
    S1_GW6,
    S1_IP6,
    SERVER_PORT,
    TRANSPARENT_CLIENT,
    TRANSPARENT_CLIENT6,
    TUNNEL_PORT,
    Exchange,
    Plane,
    build_topology,
    client,
    exchange,
    lab_socket,
    s1,
    server_reset_reaches_client,
)
from harness import Lab
from harness.arcticlab import wait_until
from sessionclient import SessionRejected

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_topology():
    with Lab(prefix="dpt") as lab:
        t, servers = build_topology(lab)
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


# --- one session, many connections ---------------------------------------------------------------------------------

def test_connections_ride_the_warm_sessions_and_a_reload_keeps_them(plane):
    """No handshake per connection: the sessions opened at start carry them, and survive a reload of the target."""
    warm = 2 * plane.workers  # two services to agent-b, one session each per worker
    plane.wait_for("a", lambda s: s["peers"].get(plane.b.peer_id, {}).get("sessions_up") == warm, what="sessions up")
    before = plane.wait_for("b", lambda s: s.get("sessions_accepted", 0) == warm, what="sessions accepted")
    for _ in range(20):
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    plane.reload("b")
    for _ in range(5):
        assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
    after = plane.wait_for("b", lambda s: s["services"].get(plane.svc, {}).get("target", 0)
                           >= before["services"].get(plane.svc, {}).get("target", 0) + 25, what="streams counted")
    assert after["sessions_accepted"] == before["sessions_accepted"], (before["sessions_accepted"],
                                                                       after["sessions_accepted"])
    handshakes = after["tls_handshakes"]
    if plane.encryption == "tls":
        assert handshakes["full"] == after["sessions_accepted"]
    else:
        assert handshakes == {"full": 0, "resumed": 0}


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
    assert server_reset_reaches_client(plane, timeout=10)


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

def _assert_nothing_reached(plane: Plane, server: str, before: int) -> None:
    """A refused session or stream never reaches the server (checked after the refusal was counted)."""
    assert plane.servers[server].count() == before, "a refused stream reached the server"


def test_a_forged_handshake_signature_is_refused_and_nothing_reaches_the_server(plane):
    before = plane.servers["s1"].count()
    session = plane.raw_session(plane.a)
    try:
        session.handshake(tamper_confirm=True)
        session.open(1, dst=s1(plane))
        with pytest.raises(SessionRejected):
            session.verdict(1)
    finally:
        session.close()
    plane.wait_refused("b", "target", "tunnel_auth_failed")
    _assert_nothing_reached(plane, "s1", before)


def test_a_replayed_handshake_is_refused(plane):
    """A recorded HELLO + CONFIRM played again: the target's answer has fresh randomness, the old signature fails."""
    original = plane.raw_session(plane.a)
    try:
        original.handshake()
        original.open(1, dst=s1(plane))
        assert original.verdict(1) == ("ok", "")
    finally:
        original.close()
    before = plane.servers["s1"].count()
    refused = plane.refused("b").get("tunnel_auth_failed", 0)
    replay = plane.raw_session(plane.a)
    try:
        replay.send(original.sent_hello)
        replay.read_handshake_message()  # the target's fresh ACCEPT
        replay.send(original.sent_confirm)
        replay.send(frames.frame(frames.OPEN, 1, b"\0"))
        with pytest.raises(SessionRejected):
            replay.read_frame()
    finally:
        replay.close()
    plane.wait_for("b", lambda s: s["by_side"]["target"]["refused"].get("tunnel_auth_failed", 0) > refused,
                   what="replay refused")
    _assert_nothing_reached(plane, "s1", before)


def test_a_third_identity_cannot_open_a_session(plane):
    before = plane.servers["s1"].count()
    session = plane.raw_session(plane.rogue)
    try:
        with pytest.raises(SessionRejected):
            session.handshake()
            session.open(1, dst=s1(plane))
            session.verdict(1)
    finally:
        session.close()
    plane.wait_refused("b", "target", "tunnel_auth_failed")
    _assert_nothing_reached(plane, "s1", before)


def test_a_third_identity_claiming_to_be_the_source_is_refused(plane):
    before = plane.servers["s1"].count()
    session = plane.raw_session(plane.a, tls_identity=plane.rogue)  # names agent-a but holds another key
    session.hs._key = plane.rogue.key
    try:
        with pytest.raises(SessionRejected):
            session.handshake()
            session.open(1, dst=s1(plane))
            session.verdict(1)
    finally:
        session.close()
    plane.wait_refused("b", "target", "tunnel_auth_failed")
    _assert_nothing_reached(plane, "s1", before)


def test_destination_outside_the_service_routes_is_refused(plane):
    """Refused once no configuration change brought the route: the target first waits up to
    ``transitions.TARGET_WAIT`` for one (the source may have learned of a new route before it)."""
    before = plane.servers["s2"].count()
    session = plane.raw_session(plane.a)
    try:
        session.handshake()
        session.open(1, dst=(plane.t.s2_ip, SERVER_PORT))
        session.sock.settimeout(TARGET_WAIT + 5)
        assert session.verdict(1) == ("refused", "destination_not_routed")
    finally:
        session.close()
    plane.wait_refused("b", "target", "destination_not_routed")
    _assert_nothing_reached(plane, "s2", before)


# --- live reload and drain ----------------------------------------------------------------------------------------

def test_reload_adding_a_route_keeps_the_transfer_in_flight(plane):
    outcome: dict = {}
    started = threading.Event()

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=4 << 20, reply=1 << 20,
                                         chunk=1 << 16, pause=0.015, started=started)
        except BaseException as err:  # reported below
            outcome["error"] = err

    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        assert started.wait(10), "the transfer did not start"
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


def test_tunnel_sockets_use_bbr_whatever_the_namespace_default(plane):
    def congestion_controls(host, side: str) -> set[str]:
        out = host.run("ss", "-tinH", "state", "established", f"( {side} = :{plane.tunnel_port} )").stdout
        return {word for word in out.split() if word in ("bbr", "cubic", "reno")}

    agents = {"a": plane.t.agent_a, "b": plane.t.agent_b}
    sysctl = "net.ipv4.tcp_congestion_control"
    defaults = {name: host.run("sysctl", "-n", sysctl).stdout.strip() for name, host in agents.items()}
    try:
        for name, host in agents.items():  # both namespaces default to reno; fresh data planes build new sessions
            host.run("sysctl", "-qw", f"{sysctl}=reno")
            plane.stop(name)
        plane.start("b")
        plane.start("a")
        assert exchange(client(plane), s1(plane), upload=10_000, reply=10).intact()
        assert congestion_controls(plane.t.agent_a, "dport") == {"bbr"}  # sessions the source dialled
        assert congestion_controls(plane.t.agent_b, "sport") == {"bbr"}  # and their accepted ends
    finally:
        for name, host in agents.items():
            host.run("sysctl", "-qw", f"{sysctl}={defaults[name]}")


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
    started = threading.Event()

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=2 << 20, reply=1 << 20, pause=0.01,
                                         started=started)
        except BaseException as err:
            outcome["error"] = err

    log_start = len(plane.log("a"))
    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        assert started.wait(10), "the transfer did not start"
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
    started = threading.Event()

    def slow_transfer() -> None:
        try:
            outcome["result"] = exchange(client(plane), s1(plane), upload=2 << 20, reply=1 << 20, pause=0.02,
                                         started=started)
        except BaseException as err:
            outcome["error"] = err

    transfer = threading.Thread(target=slow_transfer)
    transfer.start()
    try:
        assert started.wait(10), "the transfer did not start"
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


# --- bulk ---------------------------------------------------------------------------------------------------------

def test_a_bulk_iperf3_transfer_is_carried_by_the_data_plane(plane):
    """iperf3 (the tool operators reach for) completes through the service, and the data plane counts at least
    the bytes the server received: the transfer went through Arctic, not around it. How fast is
    bench/throughput's question, not a test's."""
    t = plane.t
    before = plane.stats("a").get("bytes", {}).get("to_tunnel", 0)
    server = t.s1.popen("iperf3", "-s", "-1", "-B", t.s1_ip, "-p", "5201", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: t.s1.run("ss", "-Hltn", "sport = :5201").stdout.strip(), what="iperf3 listening")
        out = t.cl.run("iperf3", "-c", t.s1_ip, "-p", "5201", "-n", str(64 << 20), "-J", timeout=120)
    finally:
        server.terminate()
        server.wait(5)
    received = json.loads(out.stdout)["end"]["sum_received"]["bytes"]
    assert received >= 32 << 20  # iperf3 stops counting when the sender is done: in-flight bytes are not in it
    plane.wait_for("a", lambda st: st.get("bytes", {}).get("to_tunnel", 0) - before >= received,
                   what="agent-a to count at least the bytes the server received")


def test_a_second_data_plane_in_the_same_namespace_refuses_to_start(plane):
    """Listeners use SO_REUSEPORT (for the workers); a second instance must not quietly take half the traffic."""
    host = plane.t.agent_a
    second = host.run(sys.executable, "-m", "arctic.dataplane", "--config", plane.config_path("a"), check=False,
                      timeout=30)
    assert second.returncode == 1, second
    assert "another data plane already serves TPROXY port" in second.stdout + second.stderr
    assert exchange(client(plane), s1(plane), upload=1000, reply=1000).intact()
