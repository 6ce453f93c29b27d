"""``arctic routes``: documented output, precedence order kept, required flags, confirmation."""

from __future__ import annotations

import pytest
from clifakes import FakeAgent

SVC = "svc_01KBYMNEVYN9NC4M3RB3ZGN4RZ"
BASE = f"/v1/services/{SVC}/routes"


@pytest.fixture
def api(fake_agent: FakeAgent, cli_config) -> FakeAgent:
    return fake_agent


def test_add_prints_the_documented_three_lines(api: FakeAgent, run_cli) -> None:
    api.on("POST", BASE, {"route_ids": [6], "count": 1}, status=201)
    res = run_cli("routes", "add", "--service", SVC, "--source-cidr", "10.0.0.0/8",
                  "--dest-cidr", "192.168.100.0/24", "--priority", "100")
    assert res.code == 0, res.err
    assert res.out.splitlines() == ["Route IDs: 6", "Count: 1", "Route added successfully: ID=6, Priority=100"]
    assert api.api_calls("POST")[0].json == {
        "routes": [{"priority": 100, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24"}]}


@pytest.mark.parametrize("cidr_args,route", [
    (["--dest-cidr", "192.168.100.0/24"], {"priority": 100, "dest_cidr": "192.168.100.0/24"}),
    (["--source-cidr", "10.0.0.0/8"], {"priority": 100, "source_cidr": "10.0.0.0/8"}),
])
def test_add_sends_only_the_cidrs_given(api: FakeAgent, run_cli, cidr_args, route) -> None:
    api.on("POST", BASE, {"route_ids": [1], "count": 1}, status=201)
    assert run_cli("route", "add", "--service", SVC, *cidr_args, "--priority", "100").code == 0
    assert api.api_calls("POST")[0].json == {"routes": [route]}


def test_add_without_service_is_a_usage_error_with_the_documented_wording(api: FakeAgent, run_cli) -> None:
    res = run_cli("routes", "add", "--priority", "100", "--dest-cidr", "192.168.100.0/24")
    assert res.code == 2
    assert res.err.splitlines()[0] == "Error: --service is required"
    assert api.calls == []


def test_add_without_priority_is_a_usage_error(api: FakeAgent, run_cli) -> None:
    res = run_cli("routes", "add", "--service", SVC, "--dest-cidr", "192.168.100.0/24")
    assert (res.code, res.err.splitlines()[0]) == (2, "Error: --priority is required")


def test_add_without_any_cidr_is_refused_before_calling_the_api(api: FakeAgent, run_cli) -> None:
    res = run_cli("routes", "add", "--service", SVC, "--priority", "100")
    assert res.code == 2 and "--source-cidr or --dest-cidr" in res.err
    assert api.calls == []


def test_invalid_cidr_from_the_agent_is_reported(api: FakeAgent, run_cli) -> None:
    api.on("POST", BASE, {"error": "invalid CIDR notation: 10.1.2.3/8 has host bits set",
                          "code": "INVALID_CIDR"}, status=400)
    res = run_cli("routes", "add", "--service", SVC, "--dest-cidr", "10.1.2.3/8", "--priority", "1")
    assert res.code == 1
    assert res.err.startswith("Error: invalid CIDR notation")


def test_an_invalid_cidr_is_reported_under_the_flag_the_operator_typed(api: FakeAgent, run_cli) -> None:
    api.on("POST", BASE, {"error": "routes.0.source_cidr '10.1.2.3/8' has host bits set: the network address must "
                                   "match the mask, use 10.0.0.0/8", "code": "INVALID_CIDR"}, status=400)
    res = run_cli("routes", "add", "--service", SVC, "--source-cidr", "10.1.2.3/8", "--priority", "1")
    assert res.code == 1
    assert res.err.splitlines()[0] == ("Error: invalid CIDR notation: --source-cidr '10.1.2.3/8' has host bits set: "
                                       "the network address must match the mask, use 10.0.0.0/8")


def test_list_keeps_the_agent_order(api: FakeAgent, run_cli) -> None:
    api.on("GET", BASE, [
        {"id": 7, "priority": 200, "source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24"},
        {"id": 6, "priority": 100, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24"},
        {"id": 8, "priority": 100, "source_cidr": None, "dest_cidr": "192.168.0.0/16"},
    ])
    res = run_cli("routes", "list", "--service", SVC)
    assert res.out.splitlines() == [
        "ID  PRIORITY  SOURCE CIDR  DEST CIDR",
        "7   200       10.1.0.0/16  192.168.100.0/24",
        "6   100       10.0.0.0/8   192.168.100.0/24",
        "8   100       -            192.168.0.0/16",
    ]


def test_list_shows_which_routes_are_shadowed_and_by_what(api: FakeAgent, run_cli) -> None:
    api.on("GET", BASE, [
        {"id": 7, "priority": 200, "source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24",
         "state": "active", "shadowed_by": None},
        {"id": 6, "priority": 100, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24",
         "state": "shadowed", "shadowed_by": {"service_id": "svc_OTHER", "route_id": 3}},
    ])
    res = run_cli("routes", "list", "--service", SVC)
    assert res.out.splitlines() == [
        "ID  PRIORITY  SOURCE CIDR  DEST CIDR         STATE",
        "7   200       10.1.0.0/16  192.168.100.0/24  active",
        "6   100       10.0.0.0/8   192.168.100.0/24  shadowed by svc_OTHER route 3",
    ]
    assert run_cli("routes", "list", "--service", SVC, "-j").out.count('"shadowed_by"') == 2  # JSON: as the API


def test_update_priority_sends_only_priority(api: FakeAgent, run_cli) -> None:
    api.handle("PUT", f"{BASE}/6", lambda c: (200, {"id": 6, "service_id": SVC, "priority": 200,
                                                    "source_cidr": "10.0.0.0/8", "dest_cidr": None}))
    res = run_cli("routes", "update", "--service", SVC, "--route", "6", "--priority", "200")
    assert res.code == 0, res.err
    assert api.api_calls("PUT")[0].json == {"priority": 200}
    assert "Route updated successfully: ID=6" in res.out


def test_update_cidrs(api: FakeAgent, run_cli) -> None:
    api.handle("PUT", f"{BASE}/6", lambda c: (200, {"id": 6, "priority": 100, **c.json}))
    res = run_cli("routes", "update", "--service", SVC, "--route", "6", "--source-cidr", "10.1.0.0/16",
                  "--dest-cidr", "192.168.200.0/24")
    assert res.code == 0, res.err
    assert api.api_calls("PUT")[0].json == {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.200.0/24"}


def test_update_route_id_must_be_an_integer(api: FakeAgent, run_cli) -> None:
    res = run_cli("routes", "update", "--service", SVC, "--route", "six", "--priority", "1")
    assert res.code == 2 and api.calls == []


def test_delete_with_yes(api: FakeAgent, run_cli) -> None:
    api.on("DELETE", f"{BASE}/6", {"deleted": True, "id": 6})
    res = run_cli("routes", "delete", "--service", SVC, "--route", "6", "--yes")
    assert (res.code, res.out.strip()) == (0, "Route deleted successfully: ID=6")


def test_delete_without_yes_on_a_pipe_refuses(api: FakeAgent, run_cli) -> None:
    res = run_cli("routes", "delete", "--service", SVC, "--route", "6")
    assert res.code == 1 and api.calls == []
