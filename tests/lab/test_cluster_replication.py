"""Three real agents in lab namespaces form a cluster, replicate every change, and any agent answers.

One lab for the module (agents a1..a3 clustered, a4 with another customer's licence, never joined); each test
leaves the cluster as it found it: three active, converged peers. Requests and CLI runs come from ``ctl``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from agentkit import Issuer
from arctic.cluster import messages
from arctic.cluster.identity import Identity, load_identity
from arctic.cluster.replication import Envelope
from clusterkit import ClusterLab, Member, service_body
from harness import Lab, http

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cl() -> Iterator[ClusterLab]:
    with Lab(prefix="arcc") as lab:
        kit = ClusterLab(lab, 4, Issuer.generate(), licences={4: {"customer_id": "cust_other"}})
        a1, a2, a3, _ = kit.members
        kit.cli_join = kit.cli(a1, "peers", "add", a2.address, "--name", "agent-2")  # the documented CLI join
        kit.api_join = kit.join(a2, a3)
        kit.wait_converged([a1, a2, a3], peers=3)
        yield kit


@pytest.fixture
def trio(cl: ClusterLab) -> Iterator[list[Member]]:
    members = cl.members[:3]
    yield members
    cl.wait_converged(members, peers=3)


def services_everywhere(cl: ClusterLab, members: list[Member]) -> list[list[dict]]:
    return [cl.ok(m, "GET", "/v1/services") for m in members]


def test_agents_join_and_meet_each_other_transitively(cl: ClusterLab, trio: list[Member]):
    a1, a2, a3 = trio
    assert "Peer added successfully" in cl.cli_join.stdout and a2.peer_id in cl.cli_join.stdout
    assert cl.api_join.status_code == 201 and cl.api_join.json()["id"] == a3.peer_id
    for m in trio:  # a1 was never joined with a3: they met through a2
        assert sorted(p["id"] for p in cl.ok(m, "GET", "/v1/peers")) == sorted(x.peer_id for x in trio)
    assert cl.ok(a1, "GET", f"/v1/peers/{a3.peer_id}")["address"] == a3.address
    table = cl.cli(a3, "peers", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "ADDRESS"] and len(table) == 4
    assert [line.split()[0] for line in cl.cli(a3, "peers", "list", "--local").stdout.splitlines()[1:]] == [a3.peer_id]
    remote = json.loads(cl.cli(a3, "peers", "list", "--remote", "-j").stdout)
    assert sorted(p["id"] for p in remote) == sorted([a1.peer_id, a2.peer_id])
    assert cl.cli(a1, "peers", "add", a2.address, check=False).stderr.strip() == "Error: peer already exists in cluster"


def test_a_service_created_on_c_with_source_a_and_target_b_appears_on_all_three(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    created = cl.ok(a3, "POST", "/v1/services", expect=201, json=service_body(a1, a2, name="c-made"))
    assert (created["source_peer_id"], created["target_peer_id"]) == (a1.peer_id, a2.peer_id)
    cl.wait_converged(trio)
    for listing in services_everywhere(cl, trio):
        assert [(s["id"], s["source_peer_id"], s["target_peer_id"]) for s in listing if s["name"] == "c-made"] == \
            [(created["id"], a1.peer_id, a2.peer_id)]
    assert any(e.get("msg") == "request forwarded to owner" for e in a3.log_entries())
    cl.ok(a2, "DELETE", f"/v1/services/{created['id']}")


def test_the_cli_source_peer_flag_creates_a_service_owned_by_another_peer(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    out = json.loads(cl.cli(a1, "services", "create", "--source-peer", a2.peer_id, "--target-peer", a3.peer_id,
                            "-j").stdout)
    assert out["source_peer_id"] == a2.peer_id
    cl.wait_converged(trio)
    assert cl.ok(a3, "GET", f"/v1/services/{out['id']}")["source_peer_id"] == a2.peer_id
    cl.cli(a3, "services", "delete", out["id"], "--yes")
    cl.wait_converged(trio)
    assert all(cl.api(m, "GET", f"/v1/services/{out['id']}").status_code == 404 for m in trio)


def test_route_changes_and_service_deletion_replicate_to_every_peer(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    svc = cl.ok(a1, "POST", "/v1/services", expect=201, json=service_body(a1, a3))["id"]
    cl.wait_converged(trio)  # a2 must know the service (and so its owner) before it can forward a change to it
    added = cl.ok(a2, "POST", f"/v1/services/{svc}/routes", expect=201,  # via a2: forwarded to a1, the owner
                  json={"routes": [{"priority": 100, "dest_cidr": "192.168.100.0/24"},
                                    {"priority": 100, "dest_cidr": "192.168.200.0/24"}]})
    cl.wait_converged(trio)
    for m in trio:
        assert [r["dest_cidr"] for r in cl.ok(m, "GET", f"/v1/services/{svc}")["routes"]] == \
            ["192.168.100.0/24", "192.168.200.0/24"]
    first, second = added["route_ids"]
    cl.ok(a3, "PUT", f"/v1/services/{svc}/routes/{first}", json={"priority": 5})
    cl.ok(a3, "DELETE", f"/v1/services/{svc}/routes/{second}")
    cl.wait_converged(trio)
    for m in trio:
        assert [(r["id"], r["priority"]) for r in cl.ok(m, "GET", f"/v1/services/{svc}")["routes"]] == [(first, 5)]
    cl.ok(a2, "DELETE", f"/v1/services/{svc}")
    cl.wait_converged(trio)
    assert [cl.api(m, "GET", f"/v1/services/{svc}").status_code for m in trio] == [404, 404, 404]


def test_the_cluster_credential_and_its_tokens_work_on_every_peer(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    token = cl.token(a1)  # issued and signed by a1
    for m in trio:
        resp = http(cl.ctl, "GET", m.url + "/v1/peers", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, (m.name, resp.text)
    other = cl.token(a3, a1.creds)  # a1's shared credential, exchanged at a3
    assert http(cl.ctl, "GET", a2.url + "/v1/services", headers={"Authorization": f"Bearer {other}"}).ok
    assert len(cl.ok(a3, "GET", "/v1/credentials")["credentials"]) == len(cl.ok(a1, "GET", "/v1/credentials")
                                                                          ["credentials"])


def test_an_agent_with_another_customers_licence_is_refused(cl: ClusterLab, trio):
    a1, a2, a3, foreign = cl.members
    before = cl.hashes(trio)
    resp = cl.join(a1, foreign)
    assert resp.status_code == 422 and resp.json() == {"error": "handshake failed: license mismatch",
                                                       "code": "LICENSE_MISMATCH"}
    assert cl.join(foreign, a2).json()["code"] == "LICENSE_MISMATCH"
    cli = cl.cli(a3, "peers", "add", foreign.address, check=False)
    assert cli.returncode != 0 and cli.stderr.strip() == "Error: handshake failed: license mismatch"
    assert cl.hashes(trio) == before
    assert [p["id"] for p in cl.ok(foreign, "GET", "/v1/peers")] == [foreign.peer_id]


def test_cli_peers_get_update_and_cluster_status_and_sync(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    shown = cl.cli(a1, "peers", "get", a2.peer_id).stdout
    assert f"ID:          {a2.peer_id}" in shown and "Is Local:    No" in shown
    cl.cli(a3, "peers", "update", a2.peer_id, "--name", "agent-2b")  # a2's record: forwarded, signed by a2
    cl.wait_converged(trio)
    assert {cl.ok(m, "GET", f"/v1/peers/{a2.peer_id}")["name"] for m in trio} == {"agent-2b"}
    synced = cl.cli(a1, "cluster", "sync").stdout.splitlines()  # every peer answers; exit 0 (nothing failed)
    names = [line.split(": ")[0] for line in synced]
    assert names[0] == "agent-1" and sorted(names[1:]) == ["agent-2b", "agent-3"], synced  # the agent asked first
    assert all("not reconciled: kernel not managed by this agent (apply_kernel: false)" in x for x in synced)
    status = cl.cli(a1, "cluster", "status").stdout
    rows = [line.split() for line in status.splitlines() if line.startswith("peer_")]
    assert sorted(r[0] for r in rows) == sorted(m.peer_id for m in trio)
    assert all(r[-5] == "Yes" for r in rows), status  # IN SYNC: every peer reported our registry hash
    body = json.loads(cl.cli(a2, "cluster", "status", "-j").stdout)
    assert body["totals"]["peers"] == 3 and body["coordinator"] == min(m.peer_id for m in trio)
    assert {p["peer_id"]: (p["reachable"], p["last_seen"] is not None) for p in body["peers"]
            if not p["is_local"]} == {a1.peer_id: (True, True), a3.peer_id: (True, True)}
    cl.cli(a1, "peers", "update", a2.peer_id, "--name", "agent-2")


def test_concurrent_conflicting_updates_converge_to_one_state(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    svc = cl.ok(a1, "POST", "/v1/services", expect=201, json=service_body(a1, a2))["id"]
    cred = cl.ok(a2, "POST", "/v1/credentials", expect=201, json={"scopes": ["services.read"]})["client_id"]
    cl.wait_converged(trio)

    def req(m: Member, method: str, path: str, body: dict | None = None) -> dict:
        return {"method": method, "url": m.url + path, "json": body, "headers": cl.headers(m)}

    answers = cl.concurrently([
        req(a2, "PUT", f"/v1/services/{svc}", {"bandwidth_limit_mbps": 20}),  # both forwarded to a1
        req(a3, "PUT", f"/v1/services/{svc}", {"bandwidth_limit_mbps": 30}),
        req(a1, "DELETE", f"/v1/credentials/{cred}"),  # two authors write the same credential record
        req(a3, "DELETE", f"/v1/credentials/{cred}"),
        req(a1, "POST", "/v1/services", service_body(a1, a3, name="same-name")),  # one name, two owners
        req(a2, "POST", "/v1/services", service_body(a2, a3, name="same-name")),
    ])
    assert [a["status"] for a in answers[:2]] == [200, 200], answers
    made = [a["body"]["id"] for a in answers[4:] if a["status"] == 201]
    assert made and all(a["status"] in (201, 409) for a in answers[4:]), answers  # 409 if it saw the other first
    cl.wait_converged(trio)
    views = [(cl.ok(m, "GET", f"/v1/services/{svc}")["bandwidth_limit_mbps"],
              sorted((s["id"], s["name"]) for s in cl.ok(m, "GET", "/v1/services") if s["id"] in made))
             for m in trio]
    assert views == [views[0]] * 3, views
    assert views[0][0] in (20, 30)
    assert [name for _, name in views[0][1]].count("same-name") == 1  # the older service keeps the name
    for m in trio:
        assert cred not in [c["client_id"] for c in cl.ok(m, "GET", "/v1/credentials")["credentials"]]
    for service_id in [*made, svc]:
        cl.ok(a1, "DELETE", f"/v1/services/{service_id}")


def test_tampered_replication_messages_are_refused_and_logged(cl: ClusterLab, trio):
    a1, a2, a3 = trio
    before = cl.hashes(trio)
    gossip = a2.url + "/v1/cluster/gossip"
    impostor = messages.seal(Identity.generate(), a1.peer_id, {"type": "hash", "registry_hash": "x"})
    resp = http(cl.ctl, "POST", gossip, json=impostor)
    assert resp.status_code == 401 and "invalid signature" in resp.json()["error"]
    stranger = messages.seal(Identity.generate(), "peer_01HZZZZZZZZZZZZZZZZZZZZZZZ", {"type": "hash"})
    resp = http(cl.ctl, "POST", gossip, json=stranger)
    assert resp.status_code == 401 and "unknown peer" in resp.json()["error"]
    altered = messages.seal(load_identity(a1.proc.dir / "data" / "peer.key"), a1.peer_id, {"type": "hash"})
    altered["msg"]["type"] = "digest"  # changed after signing
    assert http(cl.ctl, "POST", gossip, json=altered).status_code == 401
    reasons = [e["reason"] for e in a2.warnings("replication message refused")]
    assert any("invalid signature" in r for r in reasons) and any("unknown peer" in r for r in reasons)
    # A validly sealed message from a1 carrying a record a1 forged in a3's name: the message passes, the record not.
    a1_key = load_identity(a1.proc.dir / "data" / "peer.key")
    body = {"id": "svc_01HZZZZZZZZZZZZZZZZZZZZZZZ", "source_peer_id": a3.peer_id}
    unsigned = Envelope("service", body["id"], time.time_ns() // 1000, a3.peer_id, False, body, "")
    forged = Envelope(**{**unsigned.to_wire(), "sig": base64.b64encode(a1_key.sign(unsigned.signed_part())).decode()})
    resp = http(cl.ctl, "POST", gossip, json=messages.seal(a1_key, a1.peer_id, {"type": "push",
                                                                            "records": [forged.to_wire()]}))
    assert resp.status_code == 200
    assert any("bad signature" in e["reason"] for e in a2.warnings("replicated change refused"))
    # A handshake whose seal does not match the key in its self-signed peer record is refused too.
    joiner, sealer = Identity.generate(), Identity.generate()
    peer_id = "peer_01HZZZZZZZZZZZZZZZZZZZZZZY"
    record = {"id": peer_id, "name": "", "public_key": joiner.public_key_b64, "address": "198.18.0.77:8080",
              "state": "active", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    unsigned = Envelope("peer", peer_id, time.time_ns() // 1000, peer_id, False, record, "")
    signed = Envelope(**{**unsigned.to_wire(), "sig": base64.b64encode(joiner.sign(unsigned.signed_part())).decode()})
    resp = http(cl.ctl, "POST", a2.url + "/v1/cluster/handshake", json=messages.seal(sealer, peer_id, {
        "peer": signed.to_wire(), "licence": cl.issuer.licence(), "challenge": "c" * 32, "to": a2.peer_id}))
    assert resp.status_code == 422 and resp.json() == {"error": "handshake failed: invalid signature",
                                                       "code": "HANDSHAKE_FAILED"}
    assert cl.hashes(trio) == before


def test_a_stopped_agent_shows_unreachable_while_the_others_serve_and_it_catches_up(cl: ClusterLab, trio):
    coordinator = min(trio, key=lambda m: m.peer_id)  # the licence-slot coordinator is the hardest one to lose
    left, right = [m for m in trio if m is not coordinator]
    coordinator.proc.stop()
    try:
        cl.wait_for("the stopped agent to be marked unreachable", lambda: any(
            p["peer_id"] == coordinator.peer_id and p["reachable"] is False for p in cl.status(left)["peers"]))
        listing = cl.cli(left, "peers", "list").stdout
        assert "STATE" in listing.splitlines()[0] and "unreachable" in listing
        row = next(p for p in cl.status(left)["peers"] if p["peer_id"] == coordinator.peer_id)
        assert "connection refused" in (row["last_error"] or "")
        refused = cl.cli(left, "peers", "add", coordinator.address, check=False)
        assert refused.stderr.strip() == "Error: handshake failed: connection refused"
        created = cl.ok(left, "POST", "/v1/services", expect=201, json=service_body(left, right))  # safe zone
        cl.wait_converged([left, right])
        routes = cl.ok(right, "POST", f"/v1/services/{created['id']}/routes", expect=201,
                       json={"routes": [{"priority": 100, "dest_cidr": "10.20.0.0/16"}]})
        assert routes["count"] == 1
        cl.wait_converged([left, right])
        assert cl.ok(right, "GET", f"/v1/services/{created['id']}")["routes"][0]["dest_cidr"] == "10.20.0.0/16"
        assert any(e.get("msg") == "coordinator unreachable; slot taken within the safe zone"
                   for e in left.log_entries())
    finally:
        coordinator.proc.start().wait_ready(30)
    cl.wait_converged(trio, peers=3, timeout=30)
    assert cl.ok(coordinator, "GET", f"/v1/services/{created['id']}")["source_peer_id"] == left.peer_id
    cl.wait_for("everyone to see the restarted agent reachable again", lambda: all(
        p["reachable"] for m in trio for p in cl.status(m)["peers"]))
    cl.ok(coordinator, "DELETE", f"/v1/services/{created['id']}")
