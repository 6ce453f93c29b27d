# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""arctic_service: declarative services with inline routes, check mode backed by /v1/plan."""

from __future__ import annotations

from ansible_collections.arctic.fleet.plugins.modules import arctic_service
from ansible_collections.arctic.fleet.tests.unit.plugins.fake_agent import PEER_A, PEER_B

WEB = {
    "name": "web",
    "source_peer": "gateway",
    "target_peer": "branch",
    "requires_interface": True,
    "desired_ipv4_cidr": "192.168.100.10/24",
    "bandwidth_limit_mbps": 1000,
    "routes": [
        {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100},
        {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 200},
    ],
}

ROUTE_A = {"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}
ROUTE_B = {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 200}


def seed_web(agent, **fields):
    values = dict(requires_interface=True, desired_ipv4_cidr="192.168.100.10/24", bandwidth_limit_mbps=1000)
    values.update(fields)
    return agent.add_service("web", routes=[ROUTE_A, ROUTE_B], **values)


def route_pairs(service):
    return sorted((r.get("source_cidr"), r.get("dest_cidr"), r["priority"]) for r in service["routes"])


# -- create / no change / update / delete ----------------------------------------------------


def test_creates_the_service_with_peers_resolved_by_name_and_its_routes(agent, run_module):
    result = run_module(arctic_service, WEB)

    assert result["changed"] is True
    web = agent.service_named("web")
    assert (web["source_peer_id"], web["target_peer_id"]) == (PEER_A, PEER_B)
    assert (web["requires_interface"], web["desired_ipv4_cidr"], web["bandwidth_limit_mbps"]) == (
        True, "192.168.100.10/24", 1000)
    assert route_pairs(web) == [("10.0.0.0/8", "192.168.100.0/24", 100), ("10.1.0.0/16", "192.168.100.0/24", 200)]
    assert result["service"]["id"] == web["id"]
    assert len(result["service"]["routes"]) == 2
    assert result["diff"]["before"] == {"state": "absent"}
    assert result["diff"]["after"]["state"] == "present"
    assert "plan" not in result  # only check mode asks for a dry run


def test_second_run_with_the_same_arguments_changes_nothing(agent, run_module):
    run_module(arctic_service, WEB)
    writes_after_first_run = len(agent.writes)

    result = run_module(arctic_service, WEB)

    assert result["changed"] is False
    assert len(agent.writes) == writes_after_first_run
    assert result["diff"]["before"] == result["diff"]["after"]


def test_update_sends_only_the_fields_that_differ(agent, run_module):
    web = seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "bandwidth_limit_mbps": 500})

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [
        ("PUT", f"/v1/services/{web['id']}", {"bandwidth_limit_mbps": 500})]
    assert result["diff"]["before"]["bandwidth_limit_mbps"] == 1000
    assert result["diff"]["after"]["bandwidth_limit_mbps"] == 500
    assert result["service"]["bandwidth_limit_mbps"] == 500
    assert web["desired_ipv4_cidr"] == "192.168.100.10/24"  # unset options are not managed


def test_differently_spelled_equal_values_are_no_change(agent, run_module):
    agent.add_service("web", desired_ipv6_cidr="fd00::10/64", bandwidth_limit_mbps=None, transport_type=None)

    result = run_module(arctic_service, {"name": "web", "desired_ipv6_cidr": "FD00:0::10/64",
                                         "bandwidth_limit_mbps": 0, "transport_type": "tcp"})

    assert result["changed"] is False
    assert agent.writes == []


def test_empty_address_clears_it(agent, run_module):
    web = seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "desired_ipv4_cidr": ""})

    assert result["changed"] is True
    assert agent.writes[0].body == {"desired_ipv4_cidr": None}
    assert web["desired_ipv4_cidr"] is None


def test_identified_by_id_the_service_can_be_renamed(agent, run_module):
    web = seed_web(agent)

    result = run_module(arctic_service, {"id": web["id"].split("_", 1)[1].lower(), "name": "web-2"})

    assert result["changed"] is True
    assert web["name"] == "web-2"


def test_deletes_the_service_then_reports_nothing_to_do(agent, run_module):
    web = seed_web(agent)

    first = run_module(arctic_service, {"name": "web", "state": "absent"})
    second = run_module(arctic_service, {"name": "web", "state": "absent"})

    assert first["changed"] is True and second["changed"] is False
    assert [(c.method, c.path) for c in agent.writes] == [("DELETE", f"/v1/services/{web['id']}")]
    assert agent.services == {}
    assert first["diff"]["after"] == {"state": "absent"}
    assert first["diff"]["before"]["name"] == "web"
    assert first["service"] is None


# -- inline routes ---------------------------------------------------------------------------


def test_route_priority_is_updated_in_place(agent, run_module):
    web = seed_web(agent)
    route_b_id = web["routes"][1]["id"]

    result = run_module(arctic_service, {"name": "web", "routes": [dict(ROUTE_B, priority=300)]})

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [
        ("PUT", f"/v1/services/{web['id']}/routes/{route_b_id}", {"priority": 300})]
    assert web["routes"][1] == dict(ROUTE_B, id=route_b_id, priority=300)


def test_unlisted_routes_are_kept_unless_purged(agent, run_module):
    web = seed_web(agent)
    new = {"dest_cidr": "192.168.200.0/24", "priority": 100}

    kept = run_module(arctic_service, {"name": "web", "routes": [new]})
    assert kept["changed"] is True
    assert len(web["routes"]) == 3

    purged = run_module(arctic_service, {"name": "web", "routes": [new], "purge_routes": True})
    assert purged["changed"] is True
    assert route_pairs(web) == [(None, "192.168.200.0/24", 100)]
    assert purged["diff"]["after"]["routes"] == [{"source_cidr": None, "dest_cidr": "192.168.200.0/24",
                                                  "priority": 100}]


def test_route_priority_defaults_to_100(agent, run_module):
    seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "routes": [{"dest_cidr": "192.168.200.0/24"}]})

    assert agent.writes[-1].body == {"routes": [{"priority": 100, "dest_cidr": "192.168.200.0/24"}]}
    assert result["changed"] is True


# -- check mode ------------------------------------------------------------------------------


def test_check_mode_create_writes_nothing_and_shows_the_agents_kernel_diff(agent, run_module):
    result = run_module(arctic_service, WEB, check_mode=True)

    assert result["changed"] is True
    assert agent.writes == []
    assert agent.services == {}
    plan_call = [c for c in agent.calls if c.path == "/v1/plan"][0]
    ops = [change["op"] for change in plan_call.body["changes"]]
    assert ops == ["service.create", "route.add", "route.add"]
    assert plan_call.body["changes"][0]["body"]["target_peer_id"] == PEER_B
    assert result["plan"]["available"] is True
    assert result["diff"]["prepared"] == (
        f"=== gateway ({PEER_A}): kernel changes ===\n--- live\n+++ planned\n+# {', '.join(ops)}\n")
    assert result["service"]["id"] is None


def test_check_mode_update_names_the_service_and_route_in_the_plan(agent, run_module):
    web = seed_web(agent)
    route_b_id = web["routes"][1]["id"]

    result = run_module(arctic_service, {"name": "web", "bandwidth_limit_mbps": 10,
                                         "routes": [dict(ROUTE_B, priority=300)]}, check_mode=True)

    assert result["changed"] is True
    assert agent.writes == []
    assert result["plan"]["changes"] == [
        {"op": "service.update", "service_id": web["id"], "body": {"bandwidth_limit_mbps": 10}},
        {"op": "route.update", "service_id": web["id"], "route_id": route_b_id, "body": {"priority": 300}},
    ]
    assert result["service"]["bandwidth_limit_mbps"] == 10  # the predicted object


def test_check_mode_without_plan_endpoint_degrades_to_a_client_side_diff(agent, run_module):
    agent.plan_supported = False
    seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "state": "absent"}, check_mode=True)

    assert result["changed"] is True
    assert agent.writes == []
    assert result["plan"]["available"] is False
    assert "no /v1/plan endpoint" in result["plan"]["message"]
    assert "prepared" not in result["diff"]
    assert result["diff"]["after"] == {"state": "absent"}


def test_check_mode_fails_when_the_agent_says_the_plan_is_invalid(agent, run_module):
    refusal = {"error": "service limit reached", "code": "SERVICE_LIMIT_EXCEEDED"}
    agent.plan_answer = {"valid": False, "errors": [refusal], "kernel_diff": {}}

    result = run_module(arctic_service, WEB, check_mode=True)

    assert result["failed"] is True
    assert result["msg"] == "the agent would refuse this change: service limit reached"
    assert result["code"] == "PLAN_INVALID"
    assert "status" not in result  # the agent answered 200; the refusal is in the plan, not an HTTP status
    assert agent.writes == []


def test_check_mode_shows_every_touched_peer_under_its_own_header_and_warns_of_a_missing_one(agent, run_module):
    agent.plan_answer = {
        "valid": True, "errors": [], "kernel_diff": {PEER_A: "+nft rule\n", PEER_B: "+macvlan arc1\n"},
        "peers": [
            {"peer_id": PEER_A, "name": "gateway", "local": True, "valid": True, "diff": "+nft rule\n",
             "error": None},
            {"peer_id": PEER_B, "name": "branch", "local": False, "valid": True, "diff": "+macvlan arc1\n",
             "error": None},
            {"peer_id": "peer_c", "name": "far", "local": False, "valid": None, "diff": None,
             "error": "no answer within 10 s"},
        ],
    }
    agent.warning_header = '299 arctic "far (peer_c) was not asked for its dry run: no answer within 10 s"'

    result = run_module(arctic_service, WEB, check_mode=True)

    assert result["changed"] is True and agent.writes == []
    assert result["diff"]["prepared"] == (
        f"=== gateway ({PEER_A}): kernel changes ===\n+nft rule\n"
        f"=== branch ({PEER_B}): kernel changes ===\n+macvlan arc1\n"
        "=== far (peer_c): not previewed ===\n# no answer within 10 s\n"
    )
    assert [p["peer_id"] for p in result["plan"]["peers"]] == [PEER_A, PEER_B, "peer_c"]
    assert "far (peer_c) was not asked for its dry run: no answer within 10 s" in str(result["warnings"])


def test_check_mode_with_nothing_to_do_asks_for_no_plan(agent, run_module):
    seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "bandwidth_limit_mbps": 1000}, check_mode=True)

    assert result["changed"] is False
    assert "plan" not in result
    assert all(c.path != "/v1/plan" for c in agent.calls)


# -- refusals --------------------------------------------------------------------------------


def test_changing_the_target_peer_is_refused_without_writing(agent, run_module):
    seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "target_peer": "gateway"})

    assert result["failed"] is True
    assert result["msg"] == (
        f"service 'web' ({agent.service_named('web')['id']}) cannot change target_peer_id "
        f"from '{PEER_B}' to '{PEER_A}' after creation; delete it (state: absent) and create it again"
    )
    assert agent.writes == []


def test_agent_refusal_is_reported_with_its_message_and_code(agent, run_module):
    seed_web(agent)

    result = run_module(arctic_service, {"name": "web", "bandwidth_limit_mbps": -5})

    assert result["failed"] is True
    assert (result["msg"], result["code"], result["status"]) == (
        "bandwidth_limit_mbps must be 0 (unlimited) or more", "INVALID_REQUEST", 400)


def test_unknown_target_peer_fails_before_any_write(agent, run_module):
    result = run_module(arctic_service, {"name": "web", "target_peer": "nowhere"})

    assert result["failed"] is True
    assert result["msg"].startswith("no peer has id or name 'nowhere' (known peers: 'gateway'")
    assert result["code"] == "NOT_FOUND"
    assert agent.writes == []


def test_bad_route_cidr_fails_before_the_service_is_created(agent, run_module):
    args = dict(WEB, routes=[ROUTE_A, {"dest_cidr": "192.168.100.1/24"}])

    result = run_module(arctic_service, args)

    assert result["failed"] is True
    assert result["code"] == "INVALID_CIDR"
    assert "routes[1].dest_cidr '192.168.100.1/24' has host bits set" in result["msg"]
    assert "use 192.168.100.0/24" in result["msg"]
    assert agent.writes == []


def test_duplicate_inline_routes_are_refused(agent, run_module):
    result = run_module(arctic_service, dict(WEB, routes=[ROUTE_A, dict(ROUTE_A, priority=5)]))

    assert result["failed"] is True
    assert "routes[0] and routes[1] have the same source_cidr and dest_cidr" in result["msg"]


def test_creating_needs_a_target_peer(agent, run_module):
    result = run_module(arctic_service, {"name": "web", "bandwidth_limit_mbps": 5})

    assert result["failed"] is True
    assert (result["msg"], result["code"]) == ("target_peer is required to create service 'web'", "MISSING_FIELD")


def test_missing_id_is_an_error_not_a_new_service(agent, run_module):
    result = run_module(arctic_service, {"id": "svc_01HZX3J9V6Q4G7W1T6B8Y2N5KZ", "target_peer": "branch"})

    assert result["failed"] is True
    assert result["code"] == "NOT_FOUND"
    assert agent.writes == []


def test_unreachable_agent_fails_clearly(agent, run_module):
    agent.unreachable = True

    result = run_module(arctic_service, WEB)

    assert result["failed"] is True
    assert result["code"] == "AGENT_UNREACHABLE"
    assert "status" not in result  # there was no HTTP answer, so there is no HTTP status


# -- connection ------------------------------------------------------------------------------


def test_client_credentials_from_the_environment_are_used(agent, run_module, monkeypatch):
    agent.clients = {"cli_awx": "sec_awx"}
    monkeypatch.setenv("ARCTIC_CLIENT_ID", "cli_awx")
    monkeypatch.setenv("ARCTIC_CLIENT_SECRET", "sec_awx")

    result = run_module(arctic_service, WEB)

    assert result["changed"] is True
    assert all(c.headers.get("Authorization") == "Bearer minted-1" for c in agent.calls if c.path != "/v1/oauth/token")
    assert "sec_awx" not in str(result)
