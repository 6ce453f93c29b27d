# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""arctic_peer_info and arctic_service_info: read-only, never changed, missing is not an error."""

from __future__ import annotations

import pytest
from ansible_collections.arctic.fleet.plugins.modules import arctic_peer_info, arctic_service_info
from ansible_collections.arctic.fleet.tests.unit.plugins.fake_agent import PEER_A, PEER_B


@pytest.mark.parametrize("check_mode", [False, True])
def test_peer_info_lists_every_peer_and_changes_nothing(agent, run_module, check_mode):
    result = run_module(arctic_peer_info, {}, check_mode=check_mode)

    assert result["changed"] is False
    assert [p["id"] for p in result["peers"]] == [PEER_A, PEER_B]
    assert "exists" not in result
    assert agent.writes == []


def test_peer_info_finds_one_peer_by_name(agent, run_module):
    result = run_module(arctic_peer_info, {"peer": "branch"})

    assert (result["exists"], result["peer"]["id"], len(result["peers"])) == (True, PEER_B, 1)


def test_peer_info_for_a_missing_peer_says_it_does_not_exist(agent, run_module):
    result = run_module(arctic_peer_info, {"peer": "nowhere"})

    assert "failed" not in result
    assert (result["exists"], result["peer"], result["peers"]) == (False, None, [])


def test_peer_info_filters_the_local_peer(agent, run_module):
    assert [p["id"] for p in run_module(arctic_peer_info, {"is_local": True})["peers"]] == [PEER_A]
    assert [p["id"] for p in run_module(arctic_peer_info, {"is_local": False})["peers"]] == [PEER_B]


def test_service_info_returns_one_service_with_routes(agent, run_module):
    agent.add_service("web", routes=[{"dest_cidr": "192.168.100.0/24", "priority": 100}])

    result = run_module(arctic_service_info, {"service": "web"})

    assert result["changed"] is False
    assert result["exists"] is True
    assert result["service"]["routes"][0]["dest_cidr"] == "192.168.100.0/24"


def test_service_info_filters_by_peer_name_through_the_agent(agent, run_module):
    agent.add_service("to-branch")
    agent.add_service("to-gateway", source_peer_id=PEER_B, target_peer_id=PEER_A)

    result = run_module(arctic_service_info, {"target_peer": "branch", "include_routes": True})

    assert [s["name"] for s in result["services"]] == ["to-branch"]
    assert "routes" in result["services"][0]
    list_call = [c for c in agent.calls if c.path == "/v1/services"][0]
    assert list_call.query == {"target_peer_id": [PEER_B]}


def test_service_info_for_a_service_outside_the_filter_does_not_exist(agent, run_module):
    agent.add_service("web")

    result = run_module(arctic_service_info, {"service": "web", "target_peer": "gateway"})

    assert (result["exists"], result["services"]) == (False, [])


def test_service_info_reports_agent_errors(agent, run_module):
    agent.raw_answers[("GET", "/v1/services")] = (401, '{"error": "token expired", "code": "TOKEN_EXPIRED"}')

    result = run_module(arctic_service_info, {"agent_token": "tok_old"})

    assert result["failed"] is True
    assert (result["msg"], result["code"], result["status"]) == ("token expired", "TOKEN_EXPIRED", 401)
    assert "tok_old" not in str(result)
