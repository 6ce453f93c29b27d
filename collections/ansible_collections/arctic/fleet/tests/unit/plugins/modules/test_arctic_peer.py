# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""arctic_peer: joining peers by address, idempotently."""

from __future__ import annotations

from ansible_collections.arctic.fleet.plugins.modules import arctic_peer
from ansible_collections.arctic.fleet.tests.unit.plugins.fake_agent import PEER_A, PEER_B


def test_joins_a_new_peer_by_address_with_the_default_port(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.3", "name": "office"})

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [
        ("POST", "/v1/peers", {"address": "198.18.0.3:8080", "name": "office"})]
    assert result["peer"]["address"] == "198.18.0.3:8080"
    assert result["peer"]["id"].startswith("peer_")


def test_known_address_is_no_change(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.2"})

    assert result["changed"] is False
    assert result["peer"]["id"] == PEER_B
    assert agent.writes == []


def test_known_peer_with_another_name_is_renamed(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.2:8080", "name": "branch-1"})

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [("PUT", f"/v1/peers/{PEER_B}", {"name": "branch-1"})]
    assert result["diff"]["before"]["name"] == "branch"


def test_check_mode_join_writes_nothing_and_asks_no_plan(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.3:8080"}, check_mode=True)

    assert result["changed"] is True
    assert agent.writes == []
    assert all(c.path != "/v1/plan" for c in agent.calls)
    assert result["plan"]["available"] is False


def test_removes_a_remote_peer(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.2:8080", "state": "absent"})

    assert result["changed"] is True
    assert [(c.method, c.path) for c in agent.writes] == [("DELETE", f"/v1/peers/{PEER_B}")]


def test_removing_the_agents_own_peer_is_refused(agent, run_module):
    result = run_module(arctic_peer, {"address": "198.18.0.1:8080", "state": "absent"})

    assert result["failed"] is True
    assert result["msg"].startswith(f"peer 'gateway' ({PEER_A}) at 198.18.0.1:8080 is the agent's own peer")
    assert agent.writes == []


def test_failed_handshake_is_reported_in_the_agents_words(agent, run_module):
    agent.raw_answers[("POST", "/v1/peers")] = (
        422, '{"error": "peer 198.18.0.3:8080 has a licence of another customer", "code": "LICENSE_MISMATCH"}')

    result = run_module(arctic_peer, {"address": "198.18.0.3:8080"})

    assert result["failed"] is True
    assert (result["msg"], result["code"], result["status"]) == (
        "peer 198.18.0.3:8080 has a licence of another customer", "LICENSE_MISMATCH", 422)
