"""Licence limits hold cluster-wide, real agents: agents racing for the last slots cannot both win.

Every agent's licence allows ``MAX_SERVICES`` services and ``MAX_NODES`` nodes. Requests are fired at the same
instant from a process in ``ctl``; the slots are handed out by the coordinator (the active peer with the
smallest id), so exactly the licensed number of records exists once the cluster has converged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from agentkit import Issuer
from clusterkit import ClusterLab, Member, service_body
from harness import Lab

pytestmark = pytest.mark.lab

MAX_SERVICES, MAX_NODES, ATTEMPTS_EACH = 4, 3, 6


@pytest.fixture
def cl() -> Iterator[ClusterLab]:
    with Lab(prefix="arcl") as lab:
        limits = {"max_services": MAX_SERVICES, "max_nodes": MAX_NODES}
        kit = ClusterLab(lab, 4, Issuer.generate(), licences={i: limits for i in range(1, 5)})
        kit.form_cluster(kit.members[:2])
        yield kit


def create(cl: ClusterLab, at: Member, target: Member) -> dict:
    return {"method": "POST", "url": at.url + "/v1/services", "json": service_body(at, target),
            "headers": cl.headers(at)}


def test_two_agents_racing_for_the_last_service_slots_cannot_both_win(cl: ClusterLab):
    a1, a2 = cl.members[:2]
    answers = cl.concurrently([create(cl, a1, a2) for _ in range(ATTEMPTS_EACH)]
                              + [create(cl, a2, a1) for _ in range(ATTEMPTS_EACH)])
    outcome = Counter((a["status"], a["body"].get("code") if a["status"] != 201 else None) for a in answers)
    assert outcome == {(201, None): MAX_SERVICES, (422, "SERVICE_LIMIT_EXCEEDED"): 2 * ATTEMPTS_EACH - MAX_SERVICES}, \
        answers
    cl.wait_converged([a1, a2])
    for m in (a1, a2):
        assert len(cl.ok(m, "GET", "/v1/services")) == MAX_SERVICES
    assert {a["body"]["source_peer_id"] for a in answers if a["status"] == 201} <= {a1.peer_id, a2.peer_id}
    # A deleted service gives its slot back, cluster-wide.
    freed = next(a["body"]["id"] for a in answers if a["status"] == 201)
    cl.ok(a2, "DELETE", f"/v1/services/{freed}")
    assert cl.api(a1, "POST", "/v1/services", json=service_body(a1, a2)).status_code == 201
    resp = cl.api(a2, "POST", "/v1/services", json=service_body(a2, a1))
    assert resp.status_code == 422 and resp.json()["code"] == "SERVICE_LIMIT_EXCEEDED"


def test_two_joins_racing_for_the_last_node_slot_cannot_both_win(cl: ClusterLab):
    a1, a2, a3, a4 = cl.members
    answers = cl.concurrently([
        {"method": "POST", "url": a1.url + "/v1/peers", "json": {"address": a3.address}, "headers": cl.headers(a1)},
        {"method": "POST", "url": a2.url + "/v1/peers", "json": {"address": a4.address}, "headers": cl.headers(a2)},
    ])
    assert sorted(a["status"] for a in answers) == [201, 422], answers
    refused = next(a for a in answers if a["status"] == 422)["body"]
    assert refused["code"] == "NODE_LIMIT_EXCEEDED" and "node limit" in refused["error"], refused
    winner = a3 if answers[0]["status"] == 201 else a4
    loser = a4 if winner is a3 else a3
    cl.wait_converged([a1, a2, winner], peers=MAX_NODES)
    assert [p["id"] for p in cl.ok(loser, "GET", "/v1/peers")] == [loser.peer_id]
    again = cl.join(a1, loser)
    assert again.status_code == 422 and again.json()["code"] == "NODE_LIMIT_EXCEEDED"
