"""``cluster sync`` sent to one agent reconciles the other: two real agents, a MACVLAN deleted by hand on the target.

Topology ``harness.transit`` with agent-b's service interfaces on s1's LAN (``lan_interface: eth-net100``). Both
agents check for drift only every 300 s, so when agent-b's MACVLAN is back, only the sync sent to agent-a can have
put it back; and the answer itself proves it: agent-a answers once agent-b's run (made for this request) has ended.
Every call goes from the ``ctl`` host, as an operator would make it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from harness import Host, Lab, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair, wait_until

pytestmark = pytest.mark.lab

SERVICE_CIDR = "192.168.100.10/24"
DRIFT_CHECK_SECONDS = 300  # far beyond the test: a periodic drift check cannot be what repairs agent-b
REPAIR_BOUND_SECONDS = 5.0  # generous; the issue asks for agent-b repaired within 2 s (the test prints the figure)


@pytest.fixture(scope="module")
def pair() -> Iterator[ArcticPair]:
    with root_namespace_untouched("the cluster sync lab test"), Lab(prefix="arsync") as lab:
        t = transit(lab)
        config = {"reconcile_interval": DRIFT_CHECK_SECONDS, "log_level": "info"}
        with ArcticPair.start(t, encryption="none", extra_config=config,
                              per_agent={"b": {"lan_interface": "eth-net100"}}) as pair:
            yield pair


def service_macvlan(host: Host, sid: str) -> str | None:
    """The MACVLAN an agent made for service ``sid`` (its alias names the service), None when there is none."""
    listing = host.run("ip", "-d", "-o", "link", "show", "type", "macvlan").stdout
    for line in listing.splitlines():
        if f"alias arctic {sid}" in line:
            return line.split(": ")[1].split("@")[0]
    return None


def test_a_sync_sent_to_agent_a_recreates_the_macvlan_deleted_by_hand_on_agent_b(pair: ArcticPair) -> None:
    b = pair.t.agent_b
    sid = pair.create_service(requires_interface=True, desired_ipv4_cidr=SERVICE_CIDR)
    name = wait_until(lambda: service_macvlan(b, sid), what="agent-b's MACVLAN for the service")
    b.run("ip", "link", "del", "dev", name)  # the seed's "interface missing" drift, made on purpose
    assert service_macvlan(b, sid) is None

    started = time.monotonic()
    body = pair.api("POST", "/v1/cluster/sync", json={}, timeout=60)
    took = time.monotonic() - started

    assert service_macvlan(b, sid) == name, "agent-b's MACVLAN is not back when the sync answered"
    assert f"inet {SERVICE_CIDR}" in b.run("ip", "addr", "show", "dev", name).stdout
    peers = {p["peer_id"]: p for p in body["peers"]}
    on_b, on_a = peers[pair.peer_id("b")], peers[pair.peer_id("a")]
    print(f"\ncluster sync sent to agent-a: answered (agent-b repaired) in {took:.3f}s; agent-b's run took "
          f"{on_b['seconds']}s, agent-a's {on_a['seconds']}s; agent-b's actions: {on_b['actions']}")
    assert body["scope"] == "cluster" and [p["peer_id"] for p in body["peers"]][0] == pair.peer_id("a")
    assert (on_b["reachable"], on_b["reconciled"], on_b["errors"], on_b["error"]) == (True, True, [], None), on_b
    assert on_a["replicated"] and on_b["replicated"]  # each peer's replication round ended before it reconciled
    assert any(action.startswith(f"ip link add {name} link eth-net100 ") for action in on_b["actions"]), on_b
    assert (on_a["reconciled"], on_a["errors"]) == (True, [])
    assert not any(action.startswith("ip link add") for action in on_a["actions"])  # nothing was missing on a
    assert took < REPAIR_BOUND_SECONDS, f"the sync took {took:.3f}s"


def test_a_sync_sent_to_agent_a_removes_a_service_macvlan_left_behind_on_agent_b(pair: ArcticPair) -> None:
    """The seed's "Interface Not Removed": a MACVLAN that says it is Arctic's but whose service is gone."""
    b = pair.t.agent_b
    b.run("ip", "link", "add", "arc-leftover", "link", "eth-net100", "type", "macvlan", "mode", "bridge")
    b.run("ip", "link", "set", "dev", "arc-leftover", "alias", "arctic svc_01LEFTOVER0000000000000000")
    try:
        body = pair.api("POST", "/v1/cluster/sync", json={}, timeout=60)
        on_b = {p["peer_id"]: p for p in body["peers"]}[pair.peer_id("b")]
        assert "ip link del arc-leftover" in on_b["actions"], on_b
        assert service_macvlan(b, "svc_01LEFTOVER0000000000000000") is None
    finally:
        b.run("ip", "link", "del", "dev", "arc-leftover", check=False)  # only if the sync did not remove it


def test_a_second_sync_finds_nothing_left_to_change_anywhere(pair: ArcticPair) -> None:
    """Right after a sync every peer is converged: the next one reports "no change" from both, not a rerun."""
    pair.api("POST", "/v1/cluster/sync", json={}, timeout=60)
    body = pair.api("POST", "/v1/cluster/sync", json={}, on="b", timeout=60)
    assert [(p["name"], p["reconciled"], p["actions"], p["errors"]) for p in body["peers"]] == [
        ("agent-b", True, [], []), ("agent-a", True, [], [])]
