# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""arctic_route: one route of a service, identified by its (source_cidr, dest_cidr) pair."""

from __future__ import annotations

from ansible_collections.arctic.fleet.plugins.modules import arctic_route

ROUTE = {"service": "web", "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}


def test_adds_the_route_to_the_service_named(agent, run_module):
    web = agent.add_service("web")

    result = run_module(arctic_route, ROUTE)

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [
        ("POST", f"/v1/services/{web['id']}/routes",
         {"routes": [{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}]})]
    assert result["route"]["id"] == web["routes"][0]["id"]
    assert result["route"]["service_id"] == web["id"]
    assert result["diff"] == {"before": {"state": "absent"},
                              "after": {"state": "present", "source_cidr": "10.0.0.0/8",
                                        "dest_cidr": "192.168.100.0/24", "priority": 100}}


def test_same_route_again_changes_nothing(agent, run_module):
    agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}])

    result = run_module(arctic_route, ROUTE)

    assert result["changed"] is False
    assert agent.writes == []


def test_priority_change_updates_the_route_in_place(agent, run_module):
    web = agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
                                            "priority": 100}])
    route_id = web["routes"][0]["id"]

    result = run_module(arctic_route, dict(ROUTE, priority=200))

    assert result["changed"] is True
    assert [(c.method, c.path, c.body) for c in agent.writes] == [
        ("PUT", f"/v1/services/{web['id']}/routes/{route_id}", {"priority": 200})]
    assert result["route"]["id"] == route_id and result["route"]["priority"] == 200
    assert (result["diff"]["before"]["priority"], result["diff"]["after"]["priority"]) == (100, 200)


def test_unset_priority_leaves_an_existing_route_alone(agent, run_module):
    agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
                                      "priority": 700}])

    result = run_module(arctic_route, dict(ROUTE, priority=None))

    assert result["changed"] is False
    assert agent.writes == []


def test_new_route_without_priority_gets_100(agent, run_module):
    web = agent.add_service("web")

    run_module(arctic_route, {"service": web["id"], "dest_cidr": "192.168.200.0/24"})

    assert web["routes"][0]["priority"] == 100
    assert "source_cidr" not in agent.writes[0].body["routes"][0]


def test_destination_only_route_is_a_different_route_than_the_pair(agent, run_module):
    web = agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
                                            "priority": 100}])

    result = run_module(arctic_route, {"service": "web", "dest_cidr": "192.168.100.0/24", "priority": 100})

    assert result["changed"] is True
    assert len(web["routes"]) == 2


def test_deletes_the_route_then_reports_nothing_to_do(agent, run_module):
    web = agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
                                            "priority": 100}])
    route_id = web["routes"][0]["id"]

    first = run_module(arctic_route, dict(ROUTE, state="absent"))
    second = run_module(arctic_route, dict(ROUTE, state="absent"))

    assert (first["changed"], second["changed"]) == (True, False)
    assert [(c.method, c.path) for c in agent.writes] == [
        ("DELETE", f"/v1/services/{web['id']}/routes/{route_id}")]
    assert web["routes"] == []


def test_check_mode_priority_change_writes_nothing_and_asks_for_a_plan(agent, run_module):
    web = agent.add_service("web", routes=[{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
                                            "priority": 100}])
    route_id = web["routes"][0]["id"]

    result = run_module(arctic_route, dict(ROUTE, priority=200), check_mode=True)

    assert result["changed"] is True
    assert agent.writes == []
    assert web["routes"][0]["priority"] == 100
    assert result["plan"]["changes"] == [
        {"op": "route.update", "service_id": web["id"], "route_id": route_id, "body": {"priority": 200}}]
    assert "route.update" in result["diff"]["prepared"]
    assert result["route"]["priority"] == 200


def test_missing_service_is_an_error(agent, run_module):
    result = run_module(arctic_route, ROUTE)

    assert result["failed"] is True
    assert (result["msg"], result["code"], result["status"]) == ("no service has id or name 'web'", "NOT_FOUND", 404)


def test_missing_service_in_check_mode_warns_and_predicts_the_route(agent, run_module):
    result = run_module(arctic_route, ROUTE, check_mode=True)

    assert result["changed"] is True
    assert "service 'web' does not exist" in str(result["warnings"])  # 2.19 wraps warnings in objects
    assert result["plan"]["available"] is False
    assert all(c.path != "/v1/plan" for c in agent.calls)


def test_absent_route_of_a_missing_service_is_already_absent(agent, run_module):
    result = run_module(arctic_route, dict(ROUTE, state="absent"))

    assert result["changed"] is False


def test_bad_cidr_is_refused_before_any_request(agent, run_module):
    result = run_module(arctic_route, dict(ROUTE, source_cidr="10.0.0.1/8"))

    assert result["failed"] is True
    assert result["code"] == "INVALID_CIDR"
    assert agent.calls == []


def test_a_route_needs_at_least_one_cidr(agent, run_module):
    result = run_module(arctic_route, {"service": "web", "priority": 100})

    assert result["failed"] is True
    assert "one of the following is required: source_cidr, dest_cidr" in result["msg"]
