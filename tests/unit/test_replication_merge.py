"""Replication merge rules, with real ``Replicator``s on temporary SQLite files.

Peers ``A``, ``B`` and ``C`` know each other; envelopes are signed with their real Ed25519 identities.
The property at the heart of replication: whatever order the same signed envelopes arrive in, every
replica ends in the same state (same replica rows, same registry hash, same materialised tables).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from arctic.cluster.identity import Identity
from arctic.cluster.replication import Envelope, Replicator
from arctic.store import repository as repo
from arctic.store.database import Database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW_US = time.time_ns() // 1000
STAMP = "2026-01-01T00:00:00Z"
IDS = {name: f"peer_01HZZZZZZZZZZZZZZZZZZZZZZ{name}" for name in "ABC"}
KEYS = {name: Identity.generate() for name in "ABC"}
S1, S2 = "svc_01HZZZZZZZZZZZZZZZZZZZZZS1", "svc_01HZZZZZZZZZZZZZZZZZZZZZS2"
CRED = "cli_01HZZZZZZZZZZZZZZZZZZZZZC1"


def sign(signer: str, kind: str, record_id: str, version: int, body: dict | None, *,
         author: str | None = None) -> Envelope:
    """An envelope authored by ``author`` (default: the signer) and signed with ``signer``'s key."""
    unsigned = Envelope(kind, record_id, NOW_US + version, IDS[author or signer], body is None, body, "")
    sig = base64.b64encode(KEYS[signer].sign(unsigned.signed_part())).decode()
    return Envelope(unsigned.kind, unsigned.id, unsigned.version, unsigned.author, unsigned.deleted, body, sig)


def peer_body(name: str, *, state: str = "active", label: str | None = None) -> dict:
    return {"id": IDS[name], "name": label or f"agent-{name}", "public_key": KEYS[name].public_key_b64,
            "address": f"198.18.0.{ord(name) - 64}:8080", "state": state, "created_at": STAMP, "updated_at": STAMP}


def service_body(service_id: str, owner: str, target: str, *, mbps: int = 0, routes: int = 0) -> dict:
    return {"id": service_id, "name": None, "source_peer_id": IDS[owner], "target_peer_id": IDS[target],
            "transport_type": "tcp", "requires_interface": False, "desired_ipv4_cidr": None,
            "desired_ipv6_cidr": None, "fully_transparent": False, "bandwidth_limit_mbps": mbps,
            "next_route_id": routes + 1, "created_at": STAMP, "updated_at": STAMP,
            "routes": [{"id": i, "priority": 100, "source_cidr": None, "dest_cidr": f"192.168.{i}.0/24",
                        "seq": i, "created_at": STAMP, "updated_at": STAMP} for i in range(1, routes + 1)]}


def credential_body(version: int, by: str) -> dict:
    return {"client_id": CRED, "secret_hash": f"hash-{version}-{by}", "previous_secret_hash": None,
            "previous_valid_until": None, "scopes": ["urn:tillered:arctic:admin"], "license_id": "lic_1",
            "is_cluster": True, "version": version, "rotated_by": IDS[by], "rotated_at": STAMP,
            "created_at": STAMP, "revoked_at": None}


@dataclass
class Replica:
    """One peer's store and replicator; ``local`` is whose store it is (it is not an author here)."""

    db: Database
    replicator: Replicator
    local: str

    def accept(self, *envelopes: Envelope) -> tuple[int, int]:
        return self.replicator.accept(list(envelopes), self.local)

    def rows(self, table: str, order: str) -> list[tuple]:
        return [tuple(r) for r in self.db.read().execute(f"SELECT * FROM {table} ORDER BY {order}")]

    def state(self) -> dict:
        return {"hash": self.replicator.registry_hash(), "replica": self.rows("replica", "kind, id"),
                "services": self.rows("services", "id"), "routes": self.rows("routes", "service_id, id"),
                "peers": self.rows("peers", "id"), "credentials": self.rows("credentials", "client_id")}

    def peer_state(self, name: str) -> str:
        return repo.get_peer(self.db.read(), IDS[name]).state


_counter = iter(range(10**9))


def make_replica(tmp: Path, known: str = "ABC", local: str = "peer_01HZZZZZZZZZZZZZZZZZZZZZZZL") -> Replica:
    """A store that has met the peers in ``known`` (their records are in its peers table, unsigned)."""
    db = Database(tmp / f"replica-{next(_counter)}.db")
    with db.write() as tx:
        for name in known:
            tx.execute("INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
                       " VALUES (?, ?, ?, ?, 0, 'active', ?, ?)",
                       (IDS[name], f"agent-{name}", KEYS[name].public_key_b64, "198.18.0.9:8080", STAMP, STAMP))
    replicator = Replicator(db, lambda: None, lambda: local)
    return Replica(db, replicator, local)


# The history every peer may receive in any order: owner-only service edits with a delete, rival credential
# rotations (one exact version tie broken by author), self-renames, a revocation and a later-looking self-update
# of the revoked peer.
HISTORY = [
    sign("A", "service", S1, 1, service_body(S1, "A", "B")),
    sign("A", "service", S1, 2, service_body(S1, "A", "B", mbps=100, routes=2)),
    sign("A", "service", S1, 5, None),
    sign("B", "service", S2, 3, service_body(S2, "B", "C", routes=1)),
    sign("B", "service", S2, 4, service_body(S2, "B", "C", mbps=50, routes=1)),
    sign("A", "credential", CRED, 10, credential_body(2, "A")),
    sign("B", "credential", CRED, 10, credential_body(2, "B")),
    sign("C", "credential", CRED, 9, credential_body(3, "C")),
    sign("B", "peer", IDS["B"], 6, peer_body("B", label="renamed-b")),
    sign("A", "peer", IDS["C"], 7, peer_body("C", state="revoked")),
    sign("C", "peer", IDS["C"], 8, peer_body("C", label="still-here")),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.permutations(HISTORY), second=st.permutations(HISTORY), batch=st.integers(1, len(HISTORY)))
def test_any_delivery_order_converges_to_the_same_state(tmp_path, first, second, batch):
    one, two = make_replica(tmp_path), make_replica(tmp_path)
    one.accept(*first)  # everything in one gossip message
    for i in range(0, len(second), batch):  # or spread over several, in another order
        two.accept(*second[i:i + batch])
    assert one.state() == two.state()
    services = one.rows("services", "id")
    assert [s[0] for s in services] == [S2]  # S1's deletion wins over its older updates
    assert dict(zip(["id", "name"], services[0][:2], strict=True))["id"] == S2
    assert repo.get_credential(one.db.read(), CRED).secret_hash == "hash-2-" + max("AB", key=lambda n: IDS[n])
    assert one.peer_state("C") == "revoked" and one.peer_state("B") == "active"


def test_replicas_that_saw_different_halves_converge_through_digests(tmp_path):
    one, two = make_replica(tmp_path), make_replica(tmp_path)
    one.accept(*HISTORY[::2])
    two.accept(*HISTORY[1::2])
    assert one.state()["hash"] != two.state()["hash"]
    two.accept(*one.replicator.newer_than(two.replicator.digest()))
    one.accept(*two.replicator.envelopes(one.replicator.wanted_from(two.replicator.digest())))
    assert one.state() == two.state()
    assert one.replicator.wanted_from(two.replicator.digest()) == []


def test_a_delete_wins_over_a_stale_update_and_over_a_same_version_update(tmp_path):
    replica = make_replica(tmp_path)
    create = sign("A", "service", S1, 1, service_body(S1, "A", "B"))
    delete = sign("A", "service", S1, 3, None)
    stale = sign("A", "service", S1, 2, service_body(S1, "A", "B", mbps=10))
    assert replica.accept(create, delete, stale) == (2, 0)
    assert repo.get_service(replica.db.read(), S1) is None
    tied_update = sign("A", "service", S2, 4, service_body(S2, "A", "B", mbps=10))
    tied_delete = sign("A", "service", S2, 4, None)
    for order in ((tied_update, tied_delete), (tied_delete, tied_update)):
        other = make_replica(tmp_path)
        other.accept(*order)
        assert repo.get_service(other.db.read(), S2) is None


def test_a_tombstone_for_a_service_never_seen_still_blocks_its_older_versions(tmp_path):
    replica = make_replica(tmp_path)
    assert replica.accept(sign("A", "service", S1, 5, None)) == (1, 0)
    assert replica.accept(sign("A", "service", S1, 1, service_body(S1, "A", "B"))) == (0, 0)
    assert repo.get_service(replica.db.read(), S1) is None


def test_a_non_owner_cannot_change_or_delete_a_service(tmp_path, caplog):
    replica = make_replica(tmp_path)
    replica.accept(sign("A", "service", S1, 1, service_body(S1, "A", "B")))
    before = replica.state()
    with caplog.at_level(logging.WARNING, logger="arctic.cluster"):
        hijack = sign("B", "service", S1, 2, service_body(S1, "B", "C"))  # B claims A's service as its own
        edit = sign("B", "service", S1, 3, service_body(S1, "A", "B", mbps=1))
        delete = sign("B", "service", S1, 4, None)
        assert replica.accept(hijack, edit, delete) == (0, 3)
    assert replica.state() == before
    refusals = [r for r in caplog.records if r.getMessage() == "replicated change refused"]
    assert len(refusals) == 3 and all(r.levelno == logging.WARNING for r in refusals)


def test_any_peer_may_delete_the_services_of_a_peer_that_left(tmp_path):
    replica = make_replica(tmp_path)
    replica.accept(sign("A", "service", S1, 1, service_body(S1, "A", "B")))
    cleanup = sign("B", "service", S1, 3, None)
    assert replica.accept(cleanup) == (0, 1)  # A is still a member: only A may delete it
    assert replica.accept(sign("A", "peer", IDS["A"], 2, peer_body("A", state="deactivated"))) == (1, 0)
    assert replica.accept(cleanup) == (1, 0)
    assert repo.get_service(replica.db.read(), S1) is None


def test_a_forged_signature_is_refused_and_logged(tmp_path, caplog):
    replica = make_replica(tmp_path)
    forged = sign("C", "service", S1, 1, service_body(S1, "A", "B"), author="A")  # C signs in A's name
    with caplog.at_level(logging.WARNING, logger="arctic.cluster"):
        assert replica.accept(forged) == (0, 1)
    assert repo.get_service(replica.db.read(), S1) is None
    assert any("bad signature" in str(getattr(r, "fields", {}).get("reason")) for r in caplog.records)
    garbage = Envelope(forged.kind, forged.id, forged.version, forged.author, False, forged.body, "not base64!")
    assert replica.accept(garbage) == (0, 1)


def test_records_by_a_peer_not_met_yet_are_deferred_not_applied(tmp_path):
    replica = make_replica(tmp_path, known="AB")
    assert replica.accept(sign("C", "credential", CRED, 1, credential_body(1, "C"))) == (0, 1)
    assert repo.get_credential(replica.db.read(), CRED) is None


def test_a_peer_record_is_written_only_by_that_peer(tmp_path):
    replica = make_replica(tmp_path)
    rename = sign("A", "peer", IDS["B"], 1, peer_body("B", label="hijacked"))
    deactivate = sign("A", "peer", IDS["B"], 2, peer_body("B", state="deactivated"))
    assert replica.accept(rename, deactivate) == (0, 2)
    assert replica.peer_state("B") == "active"
    assert replica.accept(sign("B", "peer", IDS["B"], 3, peer_body("B", label="new-name"))) == (1, 0)
    assert repo.get_peer(replica.db.read(), IDS["B"]).name == "new-name"


def test_revocation_is_final_whatever_arrives_later(tmp_path):
    replica = make_replica(tmp_path)
    replica.accept(sign("B", "peer", IDS["C"], 1, peer_body("C", state="revoked"), author="B"))
    later_self_update = sign("C", "peer", IDS["C"], 99, peer_body("C"))
    other_peer_reinstates = sign("A", "peer", IDS["C"], 100, peer_body("C"), author="A")
    replica.accept(later_self_update, other_peer_reinstates)
    assert replica.peer_state("C") == "revoked"
    digest_says_newer = replica.replicator.wanted_from({f"peer/{IDS['C']}": [False, NOW_US + 10**9, False, IDS["C"]]})
    assert digest_says_newer == []  # a revoked record never asks for a "newer" unrevoked version


def test_a_revocation_is_recorded_even_for_a_peer_this_replica_never_met(tmp_path):
    replica = make_replica(tmp_path, known="AB")
    assert replica.accept(sign("A", "peer", IDS["C"], 1, peer_body("C", state="revoked"))) == (1, 0)
    assert replica.peer_state("C") == "revoked"
    assert replica.accept(sign("C", "peer", IDS["C"], 2, peer_body("C"))) == (0, 0)
    assert replica.peer_state("C") == "revoked"


def test_a_peer_cannot_swap_its_identity_key(tmp_path):
    replica = make_replica(tmp_path)
    replica.accept(sign("B", "peer", IDS["B"], 1, peer_body("B")))
    swapped = peer_body("B") | {"public_key": KEYS["C"].public_key_b64}
    assert replica.accept(sign("B", "peer", IDS["B"], 2, swapped)) == (0, 1)


def test_versions_far_in_the_future_wait_instead_of_winning_forever(tmp_path):
    replica = make_replica(tmp_path)
    ahead = sign("A", "credential", CRED, 3_600 * 10**6, credential_body(9, "A"))  # one hour ahead
    assert replica.accept(ahead) == (0, 1)
    assert repo.get_credential(replica.db.read(), CRED) is None


def test_malformed_bodies_are_refused_without_losing_the_rest_of_the_batch(tmp_path):
    replica = make_replica(tmp_path)
    broken = sign("A", "service", S1, 1, {"id": S1, "source_peer_id": IDS["A"]})  # misses required fields
    good = sign("B", "service", S2, 1, service_body(S2, "B", "C"))
    assert replica.accept(broken, good) == (1, 1)
    assert repo.get_service(replica.db.read(), S2) is not None and repo.get_service(replica.db.read(), S1) is None


def test_two_services_created_with_the_same_name_keep_it_on_the_older_one_everywhere(tmp_path):
    first = sign("A", "service", S1, 1, service_body(S1, "A", "B") | {"name": "web"})
    second = sign("B", "service", S2, 1, service_body(S2, "B", "C") | {"name": "web"})
    states = []
    for order in ((first, second), (second, first)):
        replica = make_replica(tmp_path)
        assert replica.accept(*order) == (2, 0)
        states.append(replica.state())
        assert repo.get_service(replica.db.read(), S1).name == "web"
        assert repo.get_service(replica.db.read(), S2).name is None
    assert states[0] == states[1]


@pytest.mark.parametrize("rank", [[1, 2, 3], "x", [False, "v", False, "a"], None])
def test_malformed_digest_entries_are_ignored(tmp_path, rank):
    replica = make_replica(tmp_path)
    replica.accept(HISTORY[0])
    assert replica.replicator.wanted_from({"service/x": rank}) == []
    assert [e.id for e in replica.replicator.newer_than({f"service/{S1}": rank})] == [S1]
