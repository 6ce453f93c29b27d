"""``POST /v1/cluster/sync`` reconciles the cluster: every member peer runs a reconcile for the request and reports it.

In-process agent (no sockets): the other peers are fakes behind ``transport.raw``, this agent's reconcile worker and
gossiper are stand-ins that record what they were asked, so each rule is checked on its own.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from arctic.api import cluster_sync
from arctic.api.forwarding import FORWARD_HEADER
from arctic.daemon.reconcile import RunReport

RECOVERY = {"X-Arctic-Recovery": "test-recovery-token-value"}
REPAIR = "ip link add arc-1 link eth0 address 02:00:00:00:00:01 type macvlan mode bridge"


class Worker:
    """A reconcile worker whose runs report ``actions``; ``hold`` keeps a run going until released."""

    def __init__(self, events: list[str], actions: list[str] | None = None) -> None:
        self.events, self.actions = events, actions or []
        self.hold: threading.Event | None = None
        self.pokes: list[str] = []

    def run_once(self, reason: str) -> RunReport:
        self.events.append(f"run {reason}")
        if self.hold is not None:
            self.hold.wait(timeout=30)
        return RunReport(reason=reason, started_at=time.time(), seconds=0.0123, actions=list(self.actions))

    def poke(self, reason: str) -> None:
        self.pokes.append(reason)


class Gossiper:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def request_round(self, wait: float = 0.0) -> bool:
        self.events.append("replication round")
        return True


class Answer:
    """What ``transport.raw`` returns: a status and a JSON body."""

    def __init__(self, status: int, body: object) -> None:
        self.status_code, self._body, self.reason = status, body, ""

    def json(self) -> object:
        return self._body


def peer_answer(peer_id: str, name: str, actions: list[str]) -> dict:
    """A peer's own answer to a forwarded sync: only itself, reconciled."""
    return {"triggered": True, "scope": "local", "note": "asked by peer x", "peers": [
        {"peer_id": peer_id, "name": name, "address": "127.0.0.1:9", "is_local": True, "reachable": True,
         "reconciled": True, "replicated": True, "actions": actions, "errors": [], "seconds": 0.2, "error": None,
         "note": None}]}


@pytest.fixture
def events() -> list[str]:
    return []


@pytest.fixture
def here(api, events):
    """This agent with a reconcile worker (its runs change nothing) and a gossiper."""
    api.runtime.reconcile_worker = Worker(events)
    api.runtime.gossiper = Gossiper(events)
    return api


@pytest.fixture
def asked(monkeypatch, events):
    """The other peers, by address: ``answers[address]`` is an Answer or an exception; ``calls`` what was sent."""
    state = {"answers": {}, "calls": []}

    def fake_raw(address, method, path, *, headers, data, params=None, timeout):
        events.append(f"ask {address}")
        state["calls"].append({"address": address, "method": method, "path": path, "headers": dict(headers),
                               "timeout": timeout})
        answer = state["answers"][address]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(cluster_sync.transport, "raw", fake_raw)
    return state


def by_name(body: dict) -> dict[str, dict]:
    return {p["name"]: p for p in body["peers"]}


def test_the_answer_lists_every_peer_with_what_its_reconcile_changed(here, asked, events):
    b = here.add_peer("agent-b")
    here.runtime.reconcile_worker.actions = ["ip rule add fwmark 0x1 table 61080"]
    asked["answers"]["127.0.0.1:9"] = Answer(200, peer_answer(b, "agent-b", [REPAIR]))
    resp = here.post("/v1/cluster/sync", json={})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["triggered"], body["scope"], body["note"]) == (True, "cluster", None)
    assert [p["name"] for p in body["peers"]] == ["agent-a", "agent-b"]  # this agent first
    a, peer_b = body["peers"]
    assert a == {"peer_id": here.local_peer_id, "name": "agent-a", "address": a["address"], "is_local": True,
                 "reachable": True, "reconciled": True, "replicated": True,
                 "actions": ["ip rule add fwmark 0x1 table 61080"], "errors": [], "seconds": 0.012, "error": None,
                 "note": None}
    assert peer_b == {"peer_id": b, "name": "agent-b", "address": "127.0.0.1:9", "is_local": False,
                      "reachable": True, "reconciled": True, "replicated": True, "actions": [REPAIR], "errors": [],
                      "seconds": 0.2, "error": None, "note": None}


def test_this_agent_replicates_before_the_others_are_asked_and_forwards_the_callers_token(here, asked, events):
    here.add_peer("agent-b")
    asked["answers"]["127.0.0.1:9"] = Answer(200, {"peers": []})
    here.post("/v1/cluster/sync", json={})
    assert events[0] == "replication round" and set(events[1:]) == {"run cluster sync", "ask 127.0.0.1:9"}
    call = asked["calls"][0]
    assert (call["method"], call["path"]) == ("POST", "/v1/cluster/sync")
    assert call["headers"][FORWARD_HEADER] == here.local_peer_id
    assert call["headers"]["Authorization"] == here.headers()["Authorization"]
    assert call["timeout"] == (cluster_sync.CONNECT_TIMEOUT_SECONDS, cluster_sync.PEER_WAIT_SECONDS)


def test_the_reconcile_is_a_run_the_request_waits_for_not_a_debounced_poke(here, asked, events):
    here.runtime.reconcile_worker.actions = [REPAIR]
    body = here.post("/v1/cluster/sync", json={}).get_json()
    assert body["peers"][0]["actions"] == [REPAIR] and events == ["replication round", "run cluster sync"]
    assert here.runtime.reconcile_worker.pokes == []


def test_a_forwarded_sync_syncs_only_the_peer_it_reached_and_asks_no_one(here, asked, events):
    here.add_peer("agent-b")
    resp = here.client.post("/v1/cluster/sync", json={}, headers={**here.headers(), FORWARD_HEADER: "peer_asker"})
    body = resp.get_json()
    assert asked["calls"] == [] and events == ["replication round", "run cluster sync"]
    assert body["scope"] == "local" and [p["peer_id"] for p in body["peers"]] == [here.local_peer_id]
    assert "peer_asker" in body["note"]


def test_an_unreachable_peer_is_reported_and_the_others_still_answer(here, asked):
    c = here.add_peer("agent-c")
    here.runtime.db.read().execute("UPDATE peers SET address = '127.0.0.1:10' WHERE id = ?", (c,))
    here.add_peer("agent-b")
    asked["answers"]["127.0.0.1:9"] = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    asked["answers"]["127.0.0.1:10"] = Answer(200, peer_answer(c, "agent-c", []))
    body = here.post("/v1/cluster/sync", json={}).get_json()
    peers = by_name(body)
    assert {k: peers["agent-b"][k] for k in ("reachable", "reconciled", "error")} == {
        "reachable": False, "reconciled": False, "error": "connection refused: 127.0.0.1:9"}
    assert peers["agent-c"]["reconciled"] and peers["agent-a"]["reconciled"]
    assert [cluster_sync.failed_entry(p) for p in body["peers"]] == [False, False, True]


def test_a_peer_that_really_refuses_the_connection_is_reported_not_reached(here):
    here.add_peer("agent-b")  # 127.0.0.1:9: the discard port, closed here
    peer = by_name(here.post("/v1/cluster/sync", json={}).get_json())["agent-b"]
    assert not peer["reachable"] and peer["error"] == "connection refused: 127.0.0.1:9"


def test_a_peer_that_refuses_the_request_or_answers_without_a_report_is_reached_but_failed(here, asked):
    c = here.add_peer("agent-c")
    here.runtime.db.read().execute("UPDATE peers SET address = '127.0.0.1:10' WHERE id = ?", (c,))
    here.add_peer("agent-b")
    asked["answers"]["127.0.0.1:9"] = Answer(401, {"error": "unauthorized: token expired", "code": "UNAUTHORIZED"})
    asked["answers"]["127.0.0.1:10"] = Answer(200, {"triggered": True})  # an agent older than this one
    peers = by_name(here.post("/v1/cluster/sync", json={}).get_json())
    assert (peers["agent-b"]["reachable"], peers["agent-b"]["error"]) == (
        True, "answered 401: unauthorized: token expired")
    assert peers["agent-c"]["reachable"] and "without a reconcile report" in peers["agent-c"]["error"]


def test_a_recovery_token_caller_syncs_only_this_agent_and_is_told_so(here, asked, events):
    here.add_peer("agent-b")
    resp = here.client.post("/v1/cluster/sync", json={}, headers=RECOVERY)
    body = resp.get_json()
    assert resp.status_code == 200 and asked["calls"] == []
    assert (body["scope"], body["note"]) == ("local", cluster_sync.RECOVERY_NOTE)
    assert [p["peer_id"] for p in body["peers"]] == [here.local_peer_id] and body["peers"][0]["reconciled"]


def test_a_run_that_outlasts_its_bound_is_reported_and_the_answer_does_not_wait_for_it(here, monkeypatch):
    monkeypatch.setattr(cluster_sync, "RECONCILE_WAIT_SECONDS", 0.2)
    worker = here.runtime.reconcile_worker
    worker.hold = threading.Event()
    try:
        entry = here.post("/v1/cluster/sync", json={}).get_json()["peers"][0]
    finally:
        worker.hold.set()
    assert (entry["reconciled"], entry["error"]) == (False, "reconcile run still going after 0.2s (it ends in the "
                                                            "background)")
    assert cluster_sync.failed_entry(entry)


def test_an_agent_that_does_not_manage_the_kernel_says_so_without_failing(api):
    entry = api.post("/v1/cluster/sync", json={}).get_json()["peers"][0]
    assert (entry["reachable"], entry["reconciled"], entry["note"]) == (True, False, cluster_sync.NO_KERNEL_NOTE)
    assert not cluster_sync.failed_entry(entry)


def test_the_openapi_document_describes_the_per_peer_answer(api):
    doc = api.client.get("/v1/openapi.json").get_json()
    ok = doc["paths"]["/v1/cluster/sync"]["post"]["responses"]["200"]
    sync = doc["components"]["schemas"][ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert {"triggered", "scope", "note", "peers"} <= set(sync["properties"])
    peer = doc["components"]["schemas"][sync["properties"]["peers"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert {"peer_id", "name", "reachable", "reconciled", "actions", "errors", "seconds", "error"} <= set(
        peer["properties"])
