"""Leaving a cluster, real agents: revocation converges and stops a silent re-join; remove-self deactivates.

Each test gets its own three-agent cluster (a1-a2-a3, joined in a chain, met transitively).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator

import pytest
from agentkit import Issuer
from arctic.cluster import messages
from arctic.cluster.identity import load_identity
from arctic.cluster.replication import Envelope
from clusterkit import ClusterLab, Member, service_body
from harness import Lab, http

pytestmark = pytest.mark.lab


@pytest.fixture
def cl() -> Iterator[ClusterLab]:
    with Lab(prefix="arcm") as lab:
        kit = ClusterLab(lab, 3, Issuer.generate())
        kit.form_cluster()
        yield kit


def peer_states(cl: ClusterLab, m: Member) -> dict[str, str]:
    return {p["id"]: p["state"] for p in cl.ok(m, "GET", "/v1/peers")}


def rejoin_handshake(cl: ClusterLab, revoked: Member, to: Member) -> dict:
    """The handshake a revoked agent would send to slip back in: its own signed record, a valid licence."""
    key = load_identity(revoked.proc.dir / "data" / "peer.key")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"id": revoked.peer_id, "name": revoked.name, "public_key": key.public_key_b64,
            "address": revoked.address, "state": "active", "created_at": now, "updated_at": now}
    unsigned = Envelope("peer", revoked.peer_id, time.time_ns() // 1000, revoked.peer_id, False, body, "")
    record = Envelope(**{**unsigned.to_wire(), "sig": base64.b64encode(key.sign(unsigned.signed_part())).decode()})
    return messages.seal(key, revoked.peer_id, {
        "peer": record.to_wire(), "licence": cl.issuer.licence(), "challenge": secrets.token_hex(16),
        "to": to.peer_id, "cluster_id": None, "name_hint": ""})


def test_a_revocation_converges_and_the_revoked_peer_cannot_rejoin(cl: ClusterLab):
    a1, a2, a3 = cl.members
    a3_token = cl.token(a3)
    out = cl.cli(a1, "peers", "delete", a3.peer_id, "--yes").stdout
    assert f"Peer deleted successfully: ID={a3.peer_id}" in out
    cl.wait_for("the revocation to reach a2", lambda: peer_states(cl, a2).get(a3.peer_id) == "revoked")
    cl.wait_converged([a1, a2])
    assert cl.api(a2, "GET", f"/v1/peers/{a3.peer_id}").status_code == 404
    assert "revoked" in cl.cli(a1, "peers", "list").stdout  # STATE column appears for a non-active peer
    # a3 still believes it is a member and keeps gossiping: every other peer refuses it, with the reason logged.
    for m in (a1, a2):
        cl.wait_for(f"{m.name} to refuse a3's gossip", lambda m=m: any(
            "revoked" in e["reason"] for e in m.warnings("replication message refused")))
    cl.wait_for("a3 to see the others refuse it", lambda: all(
        p["reachable"] is False for p in cl.status(a3)["peers"] if not p["is_local"]))
    # Its tokens stop working, and so does any handshake it (or anyone for it) attempts.
    assert http(cl.ctl, "GET", a1.url + "/v1/peers", headers={"Authorization": f"Bearer {a3_token}"}).status_code \
        == 401
    for m in (a1, a2):
        resp = http(cl.ctl, "POST", m.url + "/v1/cluster/handshake", json=rejoin_handshake(cl, a3, m))
        assert resp.status_code == 422 and "revoked" in resp.json()["error"], resp.text
        assert any(e.get("msg") == "handshake refused: revoked peer tried to rejoin" for e in
                   m.log_entries() if e.get("level") == "warning")
    resp = cl.join(a2, a3)
    assert resp.status_code == 422 and "revocation is final" in resp.json()["error"]
    cli = cl.cli(a1, "peers", "add", a3.address, check=False)
    assert cli.returncode != 0 and "revoked" in cli.stderr
    assert peer_states(cl, a1)[a3.peer_id] == "revoked" and peer_states(cl, a2)[a3.peer_id] == "revoked"
    # The two remaining peers keep working together.
    svc = cl.ok(a2, "POST", "/v1/services", expect=201, json=service_body(a1, a2))
    cl.wait_converged([a1, a2])
    assert cl.ok(a1, "GET", f"/v1/services/{svc['id']}")["source_peer_id"] == a1.peer_id


def test_remove_self_deactivates_the_peer_everywhere_and_its_services_can_be_cleaned_up(cl: ClusterLab):
    a1, a2, a3 = cl.members
    orphan = cl.ok(a2, "POST", "/v1/services", expect=201, json=service_body(a2, a3))["id"]
    cl.wait_converged()
    out = cl.cli(a2, "peers", "remove-self", "--yes")
    assert "Peer removed from the cluster" in out.stdout
    for m in (a1, a3):
        cl.wait_for(f"{m.name} to see a2 deactivated", lambda m=m: peer_states(cl, m).get(a2.peer_id) == "deactivated")
    assert "deactivated" in cl.cli(a3, "peers", "list").stdout
    # The service's owner left: nobody can forward to it, so any agent may delete it, and that replicates.
    cl.ok(a1, "DELETE", f"/v1/services/{orphan}")
    cl.wait_converged([a1, a3])
    assert cl.api(a3, "GET", f"/v1/services/{orphan}").status_code == 404
    assert not any(e.get("level") == "warning" and e.get("msg") == "replicated change refused"
                   for e in a3.log_entries())
    # Its own record is signed only by itself, and it has left: a rename cannot be forwarded any more.
    assert cl.api(a1, "PUT", f"/v1/peers/{a2.peer_id}", json={"name": "x"}).json()["code"] == "PEER_UNREACHABLE"
