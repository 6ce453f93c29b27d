"""Cluster-wide licence slots (``arctic.cluster.limits``): the coordinator's count, the safe zone, the wire.

The coordinator is the active peer with the smallest id. Stores are real SQLite files; the network is
replaced by a function, so nothing leaves the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from arctic.cluster import limits, messages, transport
from arctic.cluster.gossip import trusted_key
from arctic.cluster.identity import Identity
from arctic.errors import ApiError
from arctic.store.database import Database

STAMP = "2026-01-01T00:00:00Z"
# Sorted ids: P1 < P2 < P3, so P1 is the coordinator while it is active.
P1, P2, P3 = (f"peer_01HZZZZZZZZZZZZZZZZZZZZZZ{i}" for i in (1, 2, 3))
KEYS = {p: Identity.generate() for p in (P1, P2, P3)}


@dataclass
class Runtime:
    """What ``limits`` needs from the agent: its store, identity, id and licence."""

    db: Database
    local_peer_id: str
    identity: Identity
    licence: SimpleNamespace


def make_runtime(tmp_path: Path, local: str, *, max_services: int = 5, max_nodes: int = 10,
                 peers=(P1, P2, P3)) -> Runtime:
    db = Database(tmp_path / f"{local}.db")
    with db.write() as tx:
        for peer in peers:
            tx.execute("INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
                       " VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
                       (peer, peer[-2:], KEYS[peer].public_key_b64, f"198.18.0.{peer[-1]}:8080",
                        int(peer == local), STAMP, STAMP))
    return Runtime(db, local, KEYS[local], SimpleNamespace(max_services=max_services, max_nodes=max_nodes))


def add_service(rt: Runtime, service_id: str) -> None:
    with rt.db.write() as tx:
        tx.execute("INSERT INTO services (id, source_peer_id, target_peer_id, transport_type, requires_interface,"
                   " fully_transparent, bandwidth_limit_mbps, created_at, updated_at)"
                   " VALUES (?, ?, ?, 'tcp', 0, 0, 0, ?, ?)", (service_id, P1, P2, STAMP, STAMP))


def mark_unreachable(rt: Runtime, peer: str) -> None:
    rt.db.read().execute("INSERT INTO peer_health (peer_id, reachable, failures, next_attempt, last_error)"
                         " VALUES (?, 0, 3, 9e18, 'connection refused')", (peer,))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*_a, **_kw):
        raise AssertionError("no peer call expected here")

    monkeypatch.setattr(transport, "call", refuse)


def test_the_coordinator_is_the_active_peer_with_the_smallest_id(tmp_path):
    rt = make_runtime(tmp_path, P2)
    assert limits.coordinator(rt.db.read()).id == P1
    with rt.db.write() as tx:
        tx.execute("UPDATE peers SET state = 'revoked' WHERE id = ?", (P1,))
    assert limits.coordinator(rt.db.read()).id == P2


def test_grant_counts_services_and_unexpired_reservations_and_refuses_past_the_limit(tmp_path):
    rt = make_runtime(tmp_path, P1, max_services=3)
    add_service(rt, "svc_existing")
    assert limits.grant(rt.db, limits.SERVICE, "svc_a", P2, 3) == limits.Grant(True, 2, 3)
    assert limits.grant(rt.db, limits.SERVICE, "svc_a", P2, 3).granted  # asking again is not a second slot
    assert limits.grant(rt.db, limits.SERVICE, "svc_b", P3, 3) == limits.Grant(True, 3, 3)
    assert limits.grant(rt.db, limits.SERVICE, "svc_c", P3, 3) == limits.Grant(False, 3, 3)
    assert limits.grant(rt.db, limits.SERVICE, "svc_existing", P3, 3).granted  # an existing record holds its slot


def test_a_reservation_stops_counting_once_it_expires_or_its_service_was_deleted(tmp_path, monkeypatch):
    rt = make_runtime(tmp_path, P1)
    clock = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(limits, "time", SimpleNamespace(time=lambda: clock.now))
    assert limits.grant(rt.db, limits.SERVICE, "svc_a", P2, 1).granted
    assert not limits.grant(rt.db, limits.SERVICE, "svc_b", P2, 1).granted
    clock.now += limits.RESERVATION_TTL + 1
    assert limits.grant(rt.db, limits.SERVICE, "svc_b", P2, 1).granted
    rt.db.read().execute("INSERT INTO replica (kind, id, version, author, deleted, body, sig)"
                         " VALUES ('service', 'svc_b', 1, ?, 1, NULL, 'x')", (P2,))
    assert limits.grant(rt.db, limits.SERVICE, "svc_c", P2, 1).granted  # svc_b was created and deleted


def test_concurrent_requests_for_the_last_slots_never_overshoot(tmp_path):
    rt = make_runtime(tmp_path, P1)
    results: list[bool] = []
    start = threading.Barrier(12)

    def ask(i: int) -> None:
        start.wait()
        results.append(limits.grant(rt.db, limits.SERVICE, f"svc_{i}", P2, 4).granted)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 8 + [True] * 4


def test_the_coordinator_refuses_with_service_limit_exceeded(tmp_path, no_network):
    rt = make_runtime(tmp_path, P1, max_services=1)
    limits.reserve(rt, limits.SERVICE, "svc_a")
    with pytest.raises(ApiError) as err:
        limits.reserve(rt, limits.SERVICE, "svc_b")
    assert (err.value.status, err.value.code) == (422, "SERVICE_LIMIT_EXCEEDED")


def test_node_slots_count_active_peers_and_joining_ones(tmp_path, no_network):
    rt = make_runtime(tmp_path, P1, max_nodes=4)
    limits.reserve(rt, limits.NODE, "peer_joining_1")  # 3 members + 1
    limits.reserve(rt, limits.NODE, P2)  # already a member
    with pytest.raises(ApiError) as err:
        limits.reserve(rt, limits.NODE, "peer_joining_2")
    assert err.value.code == "NODE_LIMIT_EXCEEDED" and "node limit" in err.value.message


def test_without_the_coordinator_a_peer_creates_only_inside_the_safe_zone(tmp_path, no_network):
    rt = make_runtime(tmp_path, P2, max_services=8)  # 3 active peers
    mark_unreachable(rt, P1)
    limits.reserve(rt, limits.SERVICE, "svc_a")  # (0 - 0) + 3 * 1 = 3 <= 8
    add_service(rt, "svc_a")
    limits.reserve(rt, limits.SERVICE, "svc_b")  # (1 - 1) + 3 * 2 = 6 <= 8
    add_service(rt, "svc_b")
    with pytest.raises(ApiError) as err:  # (2 - 2) + 3 * 3 = 9 > 8
        limits.reserve(rt, limits.SERVICE, "svc_c")
    assert (err.value.status, err.value.code) == (422, "PEER_UNREACHABLE")
    assert P1 in err.value.message and "198.18.0.1:8080" in err.value.message


def test_when_the_limit_itself_is_reached_the_refusal_says_so_even_without_the_coordinator(tmp_path, no_network):
    rt = make_runtime(tmp_path, P2, max_services=1)
    mark_unreachable(rt, P1)
    add_service(rt, "svc_a")
    with pytest.raises(ApiError) as err:
        limits.reserve(rt, limits.SERVICE, "svc_b")
    assert err.value.code == "SERVICE_LIMIT_EXCEEDED"


def test_a_coordinator_that_refuses_connections_leads_to_the_safe_zone(tmp_path, monkeypatch):
    rt = make_runtime(tmp_path, P2, max_services=3)

    def refused(address, *_a, **_kw):
        raise transport.PeerCallError("connection refused", address)

    monkeypatch.setattr(transport, "call", refused)
    limits.reserve(rt, limits.SERVICE, "svc_a")  # 0 + 3 <= 3
    with pytest.raises(ApiError) as err:
        limits.reserve(rt, limits.SERVICE, "svc_b")  # the pending safe-zone slot counts: 0 + 3 * 2 > 3
    assert err.value.code == "PEER_UNREACHABLE" and "connection refused" in err.value.message


def wire_to(coordinators: dict[str, Runtime], monkeypatch) -> list[str]:
    """Route ``/v1/cluster/reserve`` calls to in-process runtimes; returns the addresses called."""
    called: list[str] = []

    def call(address, method, path, *, json=None, timeout=None, **_kw):
        assert (method, path) == ("POST", "/v1/cluster/reserve")
        called.append(address)
        target = coordinators[address]
        return limits.answer(target, json, lambda sender: trusted_key(target, sender))

    monkeypatch.setattr(transport, "call", call)
    return called


def test_a_remote_coordinator_grants_and_refuses_over_sealed_messages(tmp_path, monkeypatch):
    coordinator = make_runtime(tmp_path / "c", P1, max_services=2)
    asker = make_runtime(tmp_path / "a", P2, max_services=2)
    called = wire_to({"198.18.0.1:8080": coordinator}, monkeypatch)
    limits.reserve(asker, limits.SERVICE, "svc_a")
    limits.reserve(coordinator, limits.SERVICE, "svc_b")  # the coordinator's own creations count too
    with pytest.raises(ApiError) as err:
        limits.reserve(asker, limits.SERVICE, "svc_c")
    assert err.value.code == "SERVICE_LIMIT_EXCEEDED" and called == ["198.18.0.1:8080"] * 2


def test_the_smaller_of_both_licences_limits_applies(tmp_path, monkeypatch):
    coordinator = make_runtime(tmp_path / "c", P1, max_services=10)
    asker = make_runtime(tmp_path / "a", P2, max_services=1)
    wire_to({"198.18.0.1:8080": coordinator}, monkeypatch)
    limits.reserve(asker, limits.SERVICE, "svc_a")
    with pytest.raises(ApiError):
        limits.reserve(asker, limits.SERVICE, "svc_b")


def test_a_peer_asked_in_error_names_the_coordinator_it_knows(tmp_path):
    """Views differ briefly after a join: P2 is asked but knows P1, which has the smaller id."""
    asked = make_runtime(tmp_path, P2)
    packet = messages.seal(KEYS[P3], P3, {"type": "reserve", "kind": "service", "id": "svc_a", "limit": 5, "to": P2})
    reply = limits.answer(asked, packet, lambda s: trusted_key(asked, s))
    msg = messages.open_sealed(reply, lambda s: KEYS[P2].public_key_b64)
    assert (msg["granted"], msg["redirect"]) == (False, P1)


def test_asking_about_an_existing_member_is_granted_by_any_peer(tmp_path):
    asked = make_runtime(tmp_path, P2)
    packet = messages.seal(KEYS[P3], P3, {"type": "reserve", "kind": "node", "id": P1, "limit": 5, "to": P2})
    reply = limits.answer(asked, packet, lambda s: trusted_key(asked, s))
    assert messages.open_sealed(reply, lambda s: KEYS[P2].public_key_b64)["granted"] is True


def test_reservations_from_unknown_or_revoked_peers_are_refused(tmp_path):
    coordinator = make_runtime(tmp_path, P1, peers=(P1, P2))
    stranger = Identity.generate()
    packet = messages.seal(stranger, P3, {"type": "reserve", "kind": "service", "id": "svc_a", "limit": 5, "to": P1})
    with pytest.raises(messages.MessageError, match="unknown peer"):
        limits.answer(coordinator, packet, lambda s: trusted_key(coordinator, s))
    with coordinator.db.write() as tx:
        tx.execute("UPDATE peers SET state = 'revoked' WHERE id = ?", (P2,))
    packet = messages.seal(KEYS[P2], P2, {"type": "reserve", "kind": "service", "id": "svc_a", "limit": 5, "to": P1})
    with pytest.raises(messages.MessageError, match="revoked"):
        limits.answer(coordinator, packet, lambda s: trusted_key(coordinator, s))
