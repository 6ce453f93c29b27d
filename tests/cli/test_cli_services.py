"""``arctic services``: request bodies, documented table/key-value output, -j for scripts."""

from __future__ import annotations

import pytest
from clifakes import LOCAL_PEER, REMOTE_PEER, FakeAgent

SVC = "svc_01KBYMNEVYN9NC4M3RB3ZGN4RZ"
PEERS = [
    {"id": LOCAL_PEER, "name": "agent-1", "is_local": True, "address": "127.0.0.1:8080"},
    {"id": REMOTE_PEER, "name": "", "is_local": False, "address": "198.18.0.2:8080"},
]


def service(**over) -> dict:
    base = {"id": SVC, "name": "", "source_peer_id": LOCAL_PEER, "target_peer_id": REMOTE_PEER,
            "transport_type": "tcp", "requires_interface": False, "fully_transparent": False,
            "bandwidth_limit_mbps": 0, "route_count": 0, "created_at": "2025-12-08T09:26:30Z"}
    return base | over


@pytest.fixture
def api(fake_agent: FakeAgent, cli_config) -> FakeAgent:
    fake_agent.on("GET", "/v1/peers", PEERS)
    return fake_agent


def test_list_shows_peer_names_flags_and_the_legend(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services", [
        service(requires_interface=True),
        service(id="svc_2", source_peer_id=REMOTE_PEER, target_peer_id=LOCAL_PEER, requires_interface=True,
                fully_transparent=True, bandwidth_limit_mbps=100, transport_type="kcp"),
        service(id="svc_3"),
    ])
    res = run_cli("services", "list")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert [line.split() for line in lines[:4]] == [
        ["ID", "SOURCE", "TARGET", "TRANSPORT", "FLAGS"],
        [SVC, "agent-1", REMOTE_PEER, "tcp", "I"],  # an empty name falls back to the id
        ["svc_2", REMOTE_PEER, "agent-1", "kcp", "ITQ"],
        ["svc_3", "agent-1", REMOTE_PEER, "tcp", "-"],
    ]
    header = lines[0]
    for col in ("SOURCE", "TARGET", "TRANSPORT", "FLAGS"):  # every row's cell starts under its header
        start = header.index(col)
        assert header[start - 2 : start] == "  "
        assert all(row[start - 1] == " " and row[start] != " " for row in lines[1:4])
    assert lines[4:] == ["", "FLAGS: I=interface, T=transparent, Q=qos, -=none"]


def test_list_filters_are_sent_as_query_parameters(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services", [])
    res = run_cli("services", "list", "--source-peer", LOCAL_PEER, "--target-peer", "PEER_X",
                  "--requires-interface")
    assert res.code == 0, res.err
    assert api.api_calls("GET")[0].params == {"source_peer_id": LOCAL_PEER, "target_peer_id": "PEER_X",
                                              "requires_interface": "true"}


@pytest.mark.parametrize("flags", [["-j"], ["-o", "json"], ["--output", "json"]])
def test_json_after_the_subcommand_prints_the_raw_array(api: FakeAgent, run_cli, flags) -> None:
    api.on("GET", "/v1/services", [service()])
    res = run_cli("services", "list", "--target-peer", REMOTE_PEER, *flags)
    assert res.code == 0, res.err
    assert res.json() == [service()]


def test_json_before_the_subcommand_works_too(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services", [])
    assert run_cli("-j", "services", "list").json() == []


def test_yaml_output(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services", [service()])
    res = run_cli("services", "list", "-o", "yaml")
    assert res.out.startswith(f"- id: {SVC}\n")


def test_get_prints_the_documented_block_with_routes(api: FakeAgent, run_cli) -> None:
    api.on("GET", f"/v1/services/{SVC}", service(
        requires_interface=True, interface_mac="4A:CC:DB:76:CF:59", interface_ipv4_cidr="192.168.100.10/24",
        interface_ipv6_cidr=None, bandwidth_limit_mbps=1000, route_count=None,
        routes=[{"id": 6, "priority": 100, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24"}]))
    res = run_cli("services", "get", SVC)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[:9] == [
        f"ID:                     {SVC}",
        f"Source Peer ID:         {LOCAL_PEER}",
        "Source Peer Name:       agent-1",
        f"Target Peer ID:         {REMOTE_PEER}",
        "Target Peer Name:       -",
        "Transport:              tcp",
        "Requires Interface:     Yes",
        "Interface MAC:          4A:CC:DB:76:CF:59",
        "Actual Interface IPv4:  192.168.100.10/24",
    ]
    assert "Fully Transparent:      No" in lines
    assert "Bandwidth Limit:        1000 Mbps (bandwidth_limit_mbps: 1000)" in lines
    assert "Routes:                 1" in lines
    assert "Created At:             2025-12-08 09:26:30 UTC" in lines
    assert lines[-2:] == ["ID  PRIORITY  SOURCE CIDR  DEST CIDR", "6   100       10.0.0.0/8   192.168.100.0/24"]


def key_values(text: str) -> dict[str, str]:
    """A key-value block as a dict (the column width follows the longest key shown)."""
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines()) if value}


TRAFFIC = {"observed_by": LOCAL_PEER, "counting_since": "2026-12-01T08:00:00Z", "connections_total": 120,
           "connections_open": 3, "bytes_sent": 1_572_864, "bytes_received": 5_000_000_000,
           "throughput_sent_bps": 12_500_000, "throughput_received_bps": 800,
           "refused": {"no_route": 3, "target_refused": 1}, "refused_total": 4,
           "last_connection_at": "2026-12-06T10:00:00Z"}


def test_get_shows_the_live_traffic_counters_of_the_source_peer(api: FakeAgent, run_cli) -> None:
    api.on("GET", f"/v1/services/{SVC}", service(traffic=TRAFFIC))
    rows = key_values(run_cli("services", "get", SVC).out)
    assert rows["Connections"] == "3 open, 120 total"
    assert rows["Sent"] == "1.5 MiB (now 12.5 Mbit/s)"
    assert rows["Received"] == "4.7 GiB (now 800 bit/s)"
    assert rows["Refused"] == "4 (no_route: 3, target_refused: 1)"
    assert rows["Last Connection"] == "2026-12-06 10:00:00 UTC"
    assert rows["Counted By"] == "agent-1 since 2026-12-01 08:00:00 UTC"


def test_get_says_when_the_traffic_counters_could_not_be_read(api: FakeAgent, run_cli) -> None:
    api.on("GET", f"/v1/services/{SVC}", service(traffic=None))
    rows = key_values(run_cli("services", "get", SVC).out)
    assert rows["Traffic"] == "unknown (the source peer's data plane could not be asked)"


def test_list_wide_adds_open_connections_throughput_and_the_last_connection(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services", [service(traffic=TRAFFIC), service(id="svc_2", traffic=None)])
    res = run_cli("services", "list", "-o", "wide")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split() == ["ID", "SOURCE", "TARGET", "TRANSPORT", "FLAGS", "OPEN", "SENT/S", "RECEIVED/S",
                                "LAST", "CONNECTION"]
    assert lines[1].split() == [SVC, "agent-1", REMOTE_PEER, "tcp", "-", "3", "12.5", "Mbit/s", "800", "bit/s",
                                "2026-12-06", "10:00:00", "UTC"]
    assert lines[2].split() == ["svc_2", "agent-1", REMOTE_PEER, "tcp", "-", "-", "-", "-", "-"]
    assert "OPEN" not in run_cli("services", "list").out  # the plain table keeps the documented columns


def test_create_sends_exactly_the_seed_fields(api: FakeAgent, run_cli) -> None:
    api.handle("POST", "/v1/services", lambda call: (201, service(**call.json)))
    res = run_cli("services", "create", "--target-peer", "01HXYZDEF789", "--transport", "tcp",
                  "--requires-interface", "--desired-ipv4", "192.168.100.10/24", "--bandwidth-limit", "1000")
    assert res.code == 0, res.err
    assert api.api_calls("POST")[0].json == {
        "target_peer_id": "01HXYZDEF789", "transport_type": "tcp", "requires_interface": True,
        "desired_ipv4_cidr": "192.168.100.10/24", "bandwidth_limit_mbps": 1000}
    assert f"Service created successfully: ID={SVC}" in res.out


def test_create_defaults_to_tcp_and_sends_no_unset_fields(api: FakeAgent, run_cli) -> None:
    api.handle("POST", "/v1/services", lambda call: (201, service(**call.json)))
    assert run_cli("services", "create", "--target-peer", REMOTE_PEER).code == 0
    assert api.api_calls("POST")[0].json == {"target_peer_id": REMOTE_PEER, "transport_type": "tcp"}


def test_create_with_every_flag(api: FakeAgent, run_cli) -> None:
    api.handle("POST", "/v1/services", lambda call: (201, service(**call.json)))
    res = run_cli("services", "create", "--target-peer", REMOTE_PEER, "--source-peer", LOCAL_PEER, "--name", "web",
                  "--transport", "kcp", "--desired-ipv6", "fd00::10/64", "--fully-transparent", "-j")
    assert res.code == 0, res.err
    assert api.api_calls("POST")[0].json == {
        "target_peer_id": REMOTE_PEER, "transport_type": "kcp", "source_peer_id": LOCAL_PEER, "name": "web",
        "desired_ipv6_cidr": "fd00::10/64", "fully_transparent": True}
    assert res.json()["id"] == SVC


def test_create_without_target_peer_is_a_usage_error_with_the_documented_wording(api: FakeAgent, run_cli) -> None:
    res = run_cli("services", "create", "--requires-interface")
    assert res.code == 2
    assert res.err.splitlines()[0] == "Error: --target-peer is required"
    assert api.calls == []


def test_create_rejects_an_unknown_transport_before_calling_the_api(api: FakeAgent, run_cli) -> None:
    res = run_cli("services", "create", "--target-peer", REMOTE_PEER, "--transport", "udp")
    assert res.code == 2 and api.calls == []


def test_api_refusal_is_printed_and_exits_1(api: FakeAgent, run_cli) -> None:
    api.on("POST", "/v1/services", {"error": "fully_transparent requires requires_interface",
                                    "code": "INVALID_REQUEST"}, status=400)
    res = run_cli("services", "create", "--target-peer", REMOTE_PEER, "--fully-transparent")
    assert (res.code, res.out) == (1, "")
    assert res.err.strip() == "Error: fully_transparent requires requires_interface"


@pytest.mark.parametrize("args,body", [
    (["--bandwidth-limit", "500"], {"bandwidth_limit_mbps": 500}),
    (["--bandwidth-limit", "0"], {"bandwidth_limit_mbps": 0}),
    (["--no-requires-interface", "--no-fully-transparent"], {"requires_interface": False, "fully_transparent": False}),
    (["--transport", "KCP", "--desired-ipv4", "192.168.100.11/24"],
     {"transport_type": "kcp", "desired_ipv4_cidr": "192.168.100.11/24"}),
])
def test_update_sends_only_the_flags_given(api: FakeAgent, run_cli, args, body) -> None:
    api.handle("PUT", f"/v1/services/{SVC}", lambda call: (200, service(**call.json)))
    res = run_cli("services", "update", SVC, *args)
    assert res.code == 0, res.err
    assert api.api_calls("PUT")[0].json == body
    assert f"Service updated successfully: ID={SVC}" in res.out


def test_update_without_any_flag_is_a_usage_error(api: FakeAgent, run_cli) -> None:
    res = run_cli("services", "update", SVC)
    assert res.code == 2 and "nothing to update" in res.err
    assert api.calls == []


def test_delete_with_yes_deletes_without_asking(api: FakeAgent, run_cli) -> None:
    api.on("DELETE", f"/v1/services/{SVC}", {"deleted": True, "id": SVC})
    res = run_cli("services", "delete", SVC, "--yes")
    assert res.code == 0, res.err
    assert res.out.strip() == f"Service deleted successfully: ID={SVC}"
    assert len(api.api_calls("DELETE")) == 1


def test_delete_without_yes_on_a_pipe_refuses_and_changes_nothing(api: FakeAgent, run_cli) -> None:
    res = run_cli("services", "delete", SVC)
    assert res.code == 1
    assert "stdin is not a terminal" in res.err and "--yes" in res.err
    assert api.calls == []


def test_delete_prompts_on_stderr_and_no_keeps_the_service(api: FakeAgent, run_cli) -> None:
    res = run_cli("services", "delete", SVC, tty=True, stdin="n\n")
    assert res.code == 1
    assert f"Delete service {SVC} and all its routes? [y/N]" in res.err
    assert res.out == "" and api.calls == []


def test_delete_prompt_answered_yes_deletes(api: FakeAgent, run_cli) -> None:
    api.on("DELETE", f"/v1/services/{SVC}", {"deleted": True, "id": SVC})
    res = run_cli("service", "delete", SVC, tty=True, stdin="y\n")
    assert res.code == 0, res.err
    assert len(api.api_calls("DELETE")) == 1


def test_not_found_exits_1_with_the_agent_message(api: FakeAgent, run_cli) -> None:
    api.on("GET", "/v1/services/svc_missing", {"error": "service not found", "code": "NOT_FOUND"}, status=404)
    res = run_cli("services", "get", "svc_missing")
    assert res.code == 1
    assert res.err.strip() == "Error: service not found"
