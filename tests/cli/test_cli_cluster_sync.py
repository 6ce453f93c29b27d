"""``arctic cluster sync``: one line per peer (reconciled or not, what changed, errors) and exit code 6 when partial."""

from __future__ import annotations

from clifakes import LOCAL_PEER, REMOTE_PEER, FakeAgent

REPAIR = "ip link add arc-1 link eth-net100 address 02:00:00:00:00:01 type macvlan mode bridge"
THIRD_PEER = "peer_01KBYMD32Z2RVDE3G5Y9M530QS"


def entry(peer_id: str, name: str, **fields) -> dict:
    """A peer's entry as the agent answers it: reached and reconciled, nothing changed, unless ``fields`` say."""
    return {"peer_id": peer_id, "name": name, "address": "198.18.0.1:8080", "is_local": peer_id == LOCAL_PEER,
            "reachable": True, "reconciled": True, "replicated": True, "actions": [], "errors": [], "seconds": 0.05,
            "error": None, "note": None} | fields


def answer(*peers: dict, scope: str = "cluster", note: str | None = None) -> dict:
    return {"triggered": True, "scope": scope, "note": note, "peers": list(peers)}


def test_each_peer_gets_a_line_saying_what_its_reconcile_changed(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("POST", "/v1/cluster/sync", answer(
        entry(LOCAL_PEER, "agent-a"),
        entry(REMOTE_PEER, "agent-b", actions=[REPAIR, "ip link set arc-1 up"])))
    res = run_cli("cluster", "sync")
    assert (res.code, res.err) == (0, "")
    assert res.out.splitlines() == [
        "agent-a: reconciled, no change",
        f"agent-b: reconciled, changed: {REPAIR}; ip link set arc-1 up",
    ]


def test_a_peer_not_reached_is_shown_and_the_exit_code_is_partial(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("POST", "/v1/cluster/sync", answer(
        entry(LOCAL_PEER, "agent-a"),
        entry(REMOTE_PEER, "agent-b", reachable=False, reconciled=False, seconds=None,
              error="connection refused: 198.18.0.2:8080")))
    res = run_cli("cluster", "sync")
    assert res.code == 6
    assert res.out.splitlines()[1] == "agent-b: not reached (connection refused: 198.18.0.2:8080)"
    assert res.err == "Error: cluster sync incomplete on 1 of 2 peers: agent-b\n"


def test_a_reached_peer_whose_reconcile_failed_makes_the_exit_code_partial(fake_agent: FakeAgent, run_cli,
                                                                           cli_config) -> None:
    fake_agent.on("POST", "/v1/cluster/sync", answer(
        entry(LOCAL_PEER, "agent-a", errors=["shaping: tc refused"]),
        entry(REMOTE_PEER, "agent-b", reconciled=False, seconds=None,
              error="reconcile run still going after 10s (it ends in the background)"),
        entry(THIRD_PEER, "agent-c")))
    res = run_cli("cluster", "sync")
    assert res.code == 6
    assert res.out.splitlines() == [
        "agent-a: reconciled, no change; errors: shaping: tc refused",
        "agent-b: not reconciled: reconcile run still going after 10s (it ends in the background)",
        "agent-c: reconciled, no change",
    ]
    assert res.err == "Error: cluster sync incomplete on 2 of 3 peers: agent-a, agent-b\n"


def test_a_peer_with_nothing_to_reconcile_says_why_without_failing(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    note = "kernel not managed by this agent (apply_kernel: false): nothing to reconcile"
    fake_agent.on("POST", "/v1/cluster/sync", answer(entry(LOCAL_PEER, "agent-a", reconciled=False, note=note)))
    res = run_cli("cluster", "sync")
    assert (res.code, res.out) == (0, f"agent-a: not reconciled: {note}\n")


def test_a_local_only_sync_prints_why_the_other_peers_were_not_asked(fake_agent: FakeAgent, run_cli,
                                                                     cli_config) -> None:
    note = "the recovery token authorises this agent only: the other peers were not asked"
    fake_agent.on("POST", "/v1/cluster/sync", answer(entry(LOCAL_PEER, "agent-a"), scope="local", note=note))
    res = run_cli("cluster", "sync")
    assert (res.code, res.out.splitlines()) == (0, ["agent-a: reconciled, no change", f"Note: {note}"])


def test_json_prints_the_answer_as_is_and_keeps_the_partial_exit_code(fake_agent: FakeAgent, run_cli,
                                                                      cli_config) -> None:
    body = answer(entry(LOCAL_PEER, "agent-a", actions=[REPAIR]),
                  entry(REMOTE_PEER, "agent-b", reachable=False, reconciled=False, error="connection timeout"))
    fake_agent.on("POST", "/v1/cluster/sync", body)
    res = run_cli("cluster", "sync", "-j")
    assert (res.code, res.json()) == (6, body)
    assert res.err.startswith("Error: cluster sync incomplete on 1 of 2 peers")


def test_an_agent_without_per_peer_reports_still_gets_the_old_answer(fake_agent: FakeAgent, run_cli,
                                                                     cli_config) -> None:
    fake_agent.on("POST", "/v1/cluster/sync", {"triggered": True})
    res = run_cli("cluster", "sync", "-j")
    assert (res.code, res.json()) == (0, {"triggered": True})
