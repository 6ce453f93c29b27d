"""``arctic services create --requires-interface`` waits for the target's interface, then says what it got.

The agent is the in-memory FakeAgent; the wait polls on the FakeClock (``conftest.wait_clock``): every poll that
would sleep advances it instead, so a 30 s timeout takes no time and the number of reads is exact.
"""

from __future__ import annotations

import pytest
from clifakes import LOCAL_PEER, REMOTE_PEER, FakeAgent, FakeClock, answers_in_turn

SVC = "svc_01KBYMNEVYN9NC4M3RB3ZGN4RZ"
PATH = f"/v1/services/{SVC}"
PEERS = [
    {"id": LOCAL_PEER, "name": "agent-a", "is_local": True, "address": "127.0.0.1:8080"},
    {"id": REMOTE_PEER, "name": "agent-b", "is_local": False, "address": "198.18.0.2:8080"},
]
MAC = "02:5A:1B:2C:3D:4E"
LEASE_WAIT = ("the DHCP client on arc5c9c39c375 has no lease yet: no DHCP server on the network of eth-net100 has"
              " answered so far")


def service(**over) -> dict:
    base = {"id": SVC, "name": None, "source_peer_id": LOCAL_PEER, "target_peer_id": REMOTE_PEER,
            "transport_type": "tcp", "requires_interface": True, "desired_ipv4_cidr": None, "desired_ipv6_cidr": None,
            "interface_name": None, "interface_mac": None, "interface_ipv4_cidr": None, "interface_ipv6_cidr": None,
            "interface_state": None, "interface_detail": None, "fully_transparent": False,
            "bandwidth_limit_mbps": 0, "routes": [], "created_at": "2026-12-06T10:00:00Z"}
    return base | over


CREATED = service()  # the answer to POST: the target has not been asked yet
PENDING = service(interface_state="pending", interface_detail="the target peer has not reconciled the service yet")
CREATED_STATIC = service(desired_ipv4_cidr="192.168.100.10/24")
UP_STATIC = service(desired_ipv4_cidr="192.168.100.10/24", interface_name="arc5c9c39c375", interface_mac=MAC,
                    interface_ipv4_cidr="192.168.100.10/24", interface_state="up")
NO_LEASE = service(interface_name="arc5c9c39c375", interface_mac=MAC, interface_state="waiting_for_lease",
                   interface_detail=LEASE_WAIT)
LEASED = service(interface_name="arc5c9c39c375", interface_mac=MAC, interface_ipv4_cidr="192.168.100.53/24",
                 interface_state="up")
CREATE = ("services", "create", "--target-peer", REMOTE_PEER, "--requires-interface")


@pytest.fixture
def api(fake_agent: FakeAgent, cli_config) -> FakeAgent:
    fake_agent.on("GET", "/v1/peers", PEERS)
    fake_agent.on("POST", "/v1/services", CREATED, status=201)
    return fake_agent


def reads(api: FakeAgent) -> int:
    return len([c for c in api.api_calls("GET") if c.path == PATH])


def key_values(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines()) if value}


def test_waits_until_the_target_has_created_the_interface_then_prints_its_name_mac_and_address(
        api: FakeAgent, run_cli, wait_clock: FakeClock) -> None:
    api.on("POST", "/v1/services", CREATED_STATIC, status=201)
    api.handle("GET", PATH, answers_in_turn((200, PENDING), (200, PENDING), (200, UP_STATIC)))
    res = run_cli(*CREATE, "--desired-ipv4", "192.168.100.10/24")
    assert res.code == 0, res.err
    assert reads(api) == 3 and wait_clock.sleeps == [0.5, 0.5]  # polled every 0.5 s until the target had it
    rows = key_values(res.out)
    assert (rows["Interface Name"], rows["Interface MAC"], rows["Actual Interface IPv4"]) == (
        "arc5c9c39c375", MAC, "192.168.100.10/24")
    assert res.out.splitlines()[-2:] == [f"Service created successfully: ID={SVC}",
                                         f"Interface arc5c9c39c375 on agent-b: MAC {MAC}, IPv4 192.168.100.10/24"]
    assert res.err == "Waiting up to 30 s for agent-b to create the service interface (--no-wait skips this)\n"


def test_without_a_static_address_it_waits_for_the_dhcp_lease_and_prints_the_leased_address(
        api: FakeAgent, run_cli) -> None:
    api.handle("GET", PATH, answers_in_turn((200, PENDING), (200, NO_LEASE), (200, NO_LEASE), (200, LEASED)))
    res = run_cli(*CREATE)
    assert res.code == 0, res.err
    assert reads(api) == 4
    assert res.out.splitlines()[-1] == f"Interface arc5c9c39c375 on agent-b: MAC {MAC}, IPv4 192.168.100.53/24"
    assert "Still waiting" not in res.err


def test_a_lease_that_does_not_come_is_reported_with_the_targets_reason_at_the_timeout_and_exits_0(
        api: FakeAgent, run_cli, wait_clock: FakeClock) -> None:
    api.on("GET", PATH, NO_LEASE)
    started = wait_clock.now
    res = run_cli(*CREATE, "--wait-timeout", "3")
    assert res.code == 0, "the service was created: a wait that ends without a lease is no failure"
    assert wait_clock.now - started == 3 and reads(api) == 7  # at 0, 0.5, ... 3 s: the deadline, not one poll more
    assert res.err.splitlines()[1:] == [
        f"Still waiting for a DHCP lease on arc5c9c39c375 after 3 s: {LEASE_WAIT}",
        f"The service was created; check on it with: arctic services get {SVC}"]
    rows = key_values(res.out)  # what is known so far: name, MAC, no address, and why
    assert (rows["Interface Name"], rows["Interface MAC"], rows["Actual Interface IPv4"]) == (
        "arc5c9c39c375", MAC, "-")
    assert (rows["Interface State"], rows["Interface Detail"]) == ("waiting_for_lease", LEASE_WAIT)
    assert f"Service created successfully: ID={SVC}" in res.out


def test_a_target_that_cannot_be_asked_is_named_in_the_timeout_message(api: FakeAgent, run_cli) -> None:
    why = "the target peer could not be asked: cannot connect to 198.18.0.2:8080"
    api.on("GET", PATH, service(interface_state="unknown", interface_detail=why))
    res = run_cli(*CREATE, "--wait-timeout", "0")
    assert res.code == 0 and reads(api) == 1  # a zero timeout still reads the service once
    assert res.err.splitlines()[1] == f"Still waiting for agent-b to create the service interface after 0 s: {why}"


def test_an_interface_error_on_the_target_ends_the_wait_at_once_shows_the_error_and_exits_0(
        api: FakeAgent, run_cli) -> None:
    error = (f"service {SVC}: parent interface 'eth9' (agent config lan_interface) does not exist on this host; set"
             " lan_interface to the interface of the destination network")
    api.on("GET", PATH, service(interface_state="error", interface_detail=error))
    res = run_cli(*CREATE)
    assert res.code == 0 and reads(api) == 1
    assert res.err.splitlines()[1:] == [
        f"Warning: the service interface on agent-b has an error: {error}",
        f"The service was created; check on it with: arctic services get {SVC} (the target retries at every "
        "reconcile run; fix the cause or delete the service)"]
    assert key_values(res.out)["Interface State"] == "error"


def test_a_target_that_manages_no_kernel_ends_the_wait_at_once(api: FakeAgent, run_cli) -> None:
    why = "the target peer does not manage its kernel (apply_kernel: false), so it creates no service interfaces"
    api.on("GET", PATH, service(interface_state="unmanaged", interface_detail=why))
    res = run_cli(*CREATE)
    assert res.code == 0 and reads(api) == 1
    assert f"Warning: agent-b will not create the service interface: {why}" in res.err


def test_no_wait_makes_exactly_one_request(api: FakeAgent, run_cli, wait_clock: FakeClock) -> None:
    res = run_cli(*CREATE, "--no-wait", "-j")
    assert res.code == 0, res.err
    assert [(c.method, c.path) for c in api.api_calls()] == [("POST", "/v1/services")]
    assert res.json() == CREATED and res.err == "" and wait_clock.sleeps == []


def test_json_output_is_only_the_service_as_last_read_after_the_wait(api: FakeAgent, run_cli) -> None:
    api.handle("GET", PATH, answers_in_turn((200, PENDING), (200, LEASED)))
    res = run_cli(*CREATE, "-j")
    assert res.code == 0, res.err
    assert res.json() == LEASED  # stdout parses as the one JSON document
    assert res.err == ""  # no progress chatter for scripts


def test_json_output_at_a_timeout_is_the_service_with_its_state_and_the_notice_goes_to_stderr(
        api: FakeAgent, run_cli) -> None:
    api.on("GET", PATH, NO_LEASE)
    res = run_cli(*CREATE, "-o", "json", "--wait-timeout", "1")
    assert res.code == 0
    assert res.json()["interface_state"] == "waiting_for_lease"
    assert res.err.startswith("Still waiting for a DHCP lease on arc5c9c39c375 after 1 s: ")


@pytest.mark.parametrize("flags", [[], ["-j"]])
def test_a_service_without_an_interface_never_waits(api: FakeAgent, run_cli, wait_clock: FakeClock, flags) -> None:
    api.on("POST", "/v1/services", service(requires_interface=False), status=201)
    res = run_cli("services", "create", "--target-peer", REMOTE_PEER, *flags)
    assert res.code == 0, res.err
    assert reads(api) == 0 and wait_clock.sleeps == [] and "Waiting" not in res.err


def test_a_service_the_answering_agent_has_not_received_yet_is_waited_for(api: FakeAgent, run_cli) -> None:
    """POST went to another source peer: this agent 404s until replication brings the service."""
    api.handle("GET", PATH, answers_in_turn((404, {"error": "service not found", "code": "NOT_FOUND"}),
                                            (200, UP_STATIC)))
    res = run_cli(*CREATE, "--desired-ipv4", "192.168.100.10/24")
    assert res.code == 0 and reads(api) == 2
    assert res.out.splitlines()[-1].startswith("Interface arc5c9c39c375 on agent-b: MAC ")


def test_a_read_back_that_is_refused_ends_the_wait_without_failing_the_create(api: FakeAgent, run_cli) -> None:
    api.on("GET", PATH, {"error": "forbidden: this endpoint needs scope services.read", "code": "FORBIDDEN"},
           status=403)
    res = run_cli(*CREATE)
    assert res.code == 0 and reads(api) == 1
    assert res.err.splitlines()[1:] == [
        "Warning: cannot follow the service interface: forbidden: this endpoint needs scope services.read",
        f"The service was created; check on it with: arctic services get {SVC}"]
    assert f"Service created successfully: ID={SVC}" in res.out


def test_an_agent_without_interface_state_is_waited_on_by_its_facts(api: FakeAgent, run_cli) -> None:
    """An older target gives no interface_state: complete facts (name, MAC, the addresses asked for) end the wait."""
    old = {k: v for k, v in UP_STATIC.items() if k not in ("interface_state", "interface_detail")}
    api.on("POST", "/v1/services", CREATED_STATIC, status=201)
    api.handle("GET", PATH, answers_in_turn((200, {**old, "interface_ipv4_cidr": None}), (200, old)))
    res = run_cli(*CREATE, "--desired-ipv4", "192.168.100.10/24")
    assert res.code == 0 and reads(api) == 2


def test_help_documents_the_wait_and_its_exit_status(api: FakeAgent, run_cli) -> None:
    text = " ".join(run_cli("services", "create", "--help").out.split())
    for words in ("--wait / --no-wait", "--wait-timeout SECONDS", "default: 30;", "exit status 0",
                  "'arctic services get ID'", "name, MAC and addresses"):
        assert words in text, words
