"""Kernel state applied for real, inside lab namespaces: nft table, policy routing, drift repair, teardown.

Every apply runs in a thread that has joined the lab host's namespace (``host.call``); nft and ip run there too.
A guard checks that the root namespace's rules, tables and links are exactly as before each test.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import harness`, also without tests/conftest.py

from arctic.netconf import ruleset as rs  # noqa: E402
from arctic.netconf.applier import LinuxKernel  # noqa: E402
from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec  # noqa: E402
from arctic.netconf.errors import NftError  # noqa: E402
from arctic.netconf.reconciler import Reconciler  # noqa: E402
from harness import Host, Lab, root_namespace_untouched, transit  # noqa: E402

pytestmark = pytest.mark.lab

A, B = "svc_01HAAAAAAAAAAAAAAAAAAAAAAA", "svc_01HBBBBBBBBBBBBBBBBBBBBBBB"


@pytest.fixture(autouse=True)
def root_namespace_is_left_alone() -> Iterator[None]:
    with root_namespace_untouched("a netconf lab test"):
        yield


@pytest.fixture
def netlab() -> Iterator[Lab]:
    with Lab(prefix="arcnc") as lab:
        yield lab


@dataclass
class Node:
    """A reconciler living in one lab host (all of its kernel calls run in the host's namespace)."""

    host: Host
    rec: Reconciler

    def apply(self, desired: DesiredState):
        return self.host.call(self.rec.apply, desired, timeout=120)

    def plan(self, desired: DesiredState):
        return self.host.call(self.rec.plan, desired, timeout=120)

    def sh(self, *argv: str, check: bool = True) -> str:
        return self.host.run(*argv, check=check).stdout


@pytest.fixture
def node_on(netlab) -> Iterator:
    nodes: list[Node] = []

    def make(host: Host) -> Node:
        state = netlab.run_dir / f"netconf-{host.role}"
        rec = host.call(lambda: Reconciler(LinuxKernel(dhcp_dir=state / "dhcp"), state_dir=state))
        nodes.append(Node(host, rec))
        return nodes[-1]

    yield make
    for node in nodes:
        try:
            node.host.call(node.rec.teardown, timeout=60)
        finally:
            node.rec.applier.interfaces.dhcp.stop_all()


def outbound(sid: str, *routes: tuple[str | None, str | None, int, int]) -> ServiceSpec:
    return ServiceSpec(sid, "peer_a", "peer_b", "tcp", False, None, None, False, 0,
                       tuple(RouteSpec(sid, i + 1, s, d, p, seq) for i, (s, d, p, seq) in enumerate(routes)))


SEED = DesiredState("peer_a", (
    outbound(A, ("10.0.0.0/8", "192.168.0.0/16", 100, 1), ("10.1.0.0/16", "192.168.100.0/24", 200, 3)),
    outbound(B, ("10.0.0.0/8", "192.168.100.0/24", 100, 2), ("fd00:10::/64", None, 100, 4)),
))


def comments(listing: str) -> list[str]:
    return [ln.split('comment "')[1].rstrip('"') for ln in listing.splitlines() if "tproxy" in ln]


def test_the_seed_routes_land_in_the_namespace_in_precedence_order(netlab, node_on):
    node = node_on(netlab.host("a"))
    plan = node.apply(SEED)
    assert plan.applied and plan.changes["nftables"] and plan.nft_seconds is not None
    listing = node.sh("nft", "list", "ruleset")
    assert comments(listing) == [f"arctic {A} route 2", f"arctic {B} route 1", f"arctic {A} route 1",
                                 f"arctic {B} route 2"]
    assert "tproxy ip6 to :61080" in listing and listing.count("table ") == 1  # no other table was created
    assert "1080:\tfrom all fwmark 0x1a0000/0xff0000 lookup 61080" in node.sh("ip", "rule")
    assert "1080:\tfrom all fwmark 0x1a0000/0xff0000 lookup 61080" in node.sh("ip", "-6", "rule")
    assert node.sh("ip", "route", "show", "table", "61080").strip() == "local default dev lo proto static scope host"
    assert "local default dev lo" in node.sh("ip", "-6", "route", "show", "table", "61080")


def test_applying_the_same_state_twice_changes_nothing(netlab, node_on):
    node = node_on(netlab.host("a"))
    node.apply(SEED)
    handles = node.sh("nft", "-a", "list", "table", "inet", "arctic")
    again = node.apply(SEED)
    assert not again.changed and again.actions == [] and again.diff == ""
    assert node.sh("nft", "-a", "list", "table", "inet", "arctic") == handles  # not even re-created


def test_a_refused_transaction_leaves_the_previous_table_exactly_as_it_was(netlab, node_on, monkeypatch):
    node = node_on(netlab.host("a"))
    node.apply(SEED)
    before = node.sh("nft", "-a", "list", "table", "inet", "arctic")
    real = rs.render_script

    def broken(ruleset):  # a valid new table with one bad rule at the very end: only atomicity saves the old one
        text = real(ruleset)
        head, tail = text.rsplit("\t}\n}\n", 1)
        return head + "\t\tip daddr 192.168.7.0/24 this-is-not-nft accept\n\t}\n}\n" + tail

    monkeypatch.setattr(rs, "render_script", broken)
    bigger = DesiredState("peer_a", SEED.services + (outbound("svc_C", (None, "192.168.7.0/24", 1, 9)),))
    with pytest.raises(NftError, match="nothing changed"):
        node.apply(bigger)
    assert node.sh("nft", "-a", "list", "table", "inet", "arctic") == before
    monkeypatch.setattr(rs, "render_script", real)
    node.apply(bigger)
    assert "arctic svc_C route 1" in node.sh("nft", "list", "table", "inet", "arctic")


def test_a_deleted_table_rule_or_ip_rule_is_put_back_by_the_next_apply(netlab, node_on):
    node = node_on(netlab.host("a"))
    node.apply(SEED)
    original = node.sh("nft", "list", "table", "inet", "arctic")

    node.sh("nft", "delete", "table", "inet", "arctic")
    plan = node.apply(SEED)
    assert plan.drift == ["nftables: table inet arctic was deleted outside Arctic"]
    assert node.sh("nft", "list", "table", "inet", "arctic") == original

    handle = next(ln.rsplit("# handle ", 1)[1] for ln in node.sh("nft", "-a", "list", "chain", "inet", "arctic",
                                                                  "prerouting").splitlines()
                  if f"arctic {B} route 1" in ln)
    node.sh("nft", "delete", "rule", "inet", "arctic", "prerouting", "handle", handle)
    plan = node.apply(SEED)
    assert plan.drift == ["nftables: table inet arctic was changed outside Arctic"]
    assert node.sh("nft", "list", "table", "inet", "arctic") == original

    node.sh("ip", "rule", "del", "priority", "1080", "fwmark", "0x1a0000/0xff0000", "lookup", "61080")
    node.sh("ip", "route", "flush", "table", "61080")
    plan = node.apply(SEED)
    assert "ip -4 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080" in plan.actions
    assert "ip -4 route add local 0.0.0.0/0 dev lo table 61080" in plan.actions
    assert "lookup 61080" in node.sh("ip", "rule")
    assert not node.plan(SEED).changed


def test_when_no_service_needs_them_table_rules_and_routes_are_all_gone(netlab, node_on):
    node = node_on(netlab.host("a"))
    node.apply(SEED)
    plan = node.apply(DesiredState("peer_a", ()))
    assert "nft: table inet arctic deleted" in plan.actions
    assert node.sh("nft", "list", "tables").strip() == ""
    assert "61080" not in node.sh("ip", "rule") and "61080" not in node.sh("ip", "-6", "rule")
    assert node.sh("ip", "route", "show", "table", "61080", check=False).strip() == ""
    assert node.sh("ip", "-6", "route", "show", "table", "61080", check=False).strip() == ""
    assert not node.plan(DesiredState("peer_a", ())).changed


# --- interception, end to end -------------------------------------------------------------------------------------

def _tproxy_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(64)
    sock.settimeout(0.2)
    return sock


def _serve(sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, peer = sock.accept()
        except (TimeoutError, OSError):
            continue
        with conn:
            dst = conn.getsockname()
            conn.sendall(f"{peer[0]}->{dst[0]}:{dst[1]}".encode())


def _ask(address: str, port: int, source: str | None = None) -> str | None:
    try:
        with socket.create_connection((address, port), timeout=2,
                                      source_address=(source, 0) if source else None) as conn:
            return conn.recv(200).decode()
    except OSError:
        return None


def test_matching_connections_are_diverted_to_the_tproxy_listener_with_their_original_destination(netlab, node_on):
    t = transit(netlab)
    node = node_on(t.agent_a)
    node.apply(DesiredState("peer_a", (
        outbound(A, (None, "192.168.100.0/24", 100, 1)),  # destination-only
        outbound(B, ("10.1.0.0/16", None, 100, 2)),  # source-only: anything from 10.1/16
    )))
    listener = t.agent_a.call(_tproxy_listener, 61080)
    stop = threading.Event()
    server = threading.Thread(target=_serve, args=(listener, stop), daemon=True)
    server.start()
    try:
        assert t.cl.call(_ask, "192.168.100.2", 8080) == "10.0.0.2->192.168.100.2:8080"
        assert t.cl.call(_ask, "192.168.200.2", 8080) is None  # no route matches: not intercepted (and unrouted)
        extra = t.client_addr("10.1.0.50", 16).split("/")[0]
        assert t.cl.call(_ask, "192.168.200.2", 443, extra) == "10.1.0.50->192.168.200.2:443"
    finally:
        stop.set()
        server.join(5)
        listener.close()


def test_ten_thousand_routes_apply_time(netlab, node_on):
    node = node_on(netlab.host("a"))
    routes_a = [(f"10.{i // 250}.{i % 250}.0/24", f"172.31.{i % 250}.{(i // 250) % 250}/32", 100, 2 * i)
                for i in range(5000)]
    routes_b = [(None, f"10.{200 + i // 250}.{i % 250}.1/32", 100, 2 * i + 1) for i in range(5000)]
    desired = DesiredState("peer_a", (outbound(A, *routes_a), outbound(B, *routes_b)))
    started = time.monotonic()
    plan = node.apply(desired)
    total = time.monotonic() - started
    started = time.monotonic()
    again = node.plan(desired)
    replan = time.monotonic() - started
    print(f"\n10,000 routes: apply {total:.2f}s (nft transaction + readback {plan.nft_seconds:.2f}s), "
          f"no-change plan {replan:.2f}s")
    assert not again.changed
    listing = node.sh("nft", "list", "table", "inet", "arctic")
    assert listing.count("comment \"arctic svc_01H") == 10_000
