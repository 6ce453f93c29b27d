# Copyright: Arctic contributors
# SPDX-License-Identifier: Apache-2.0
"""The shared client: normalisation, lookups by id or name, authentication and error mapping."""

from __future__ import annotations

import os
import re

import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.arctic.fleet.plugins.module_utils.arctic_api import (
    ArcticApiError,
    ArcticClient,
    arctic_argument_spec,
    check_network,
    find_one,
    id_matches,
    is_http_status,
    normalise_address,
    normalise_interface,
    normalise_network,
    plan_peers,
    prepared_text,
    sorted_routes,
    warning_texts,
)
from ansible_collections.arctic.fleet.tests.unit.plugins.compat import patch_module_args
from ansible_collections.arctic.fleet.tests.unit.plugins.fake_agent import AGENT_URL, PEER_A, PEER_B

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


class StubModule:
    """Just what ArcticClient reads from an AnsibleModule."""

    check_mode = False

    def __init__(self, **params):
        self.params = {"agent_url": AGENT_URL + "/", "agent_token": None, "client_id": None,
                       "client_secret": None, "validate_certs": True, "timeout": 5}
        self.params.update(params)
        self.warnings = []

    def warn(self, text):
        self.warnings.append(text)


# -- normalisation --------------------------------------------------------------------------


def test_route_cidrs_compare_in_canonical_form():
    assert normalise_network("FD00:0::/64") == "fd00::/64"
    assert normalise_network("10.0.0.0/8") == "10.0.0.0/8"
    assert normalise_network(None) is None


def test_unparsable_cidr_is_left_for_the_agent_to_refuse():
    assert normalise_network("not-a-cidr") == "not-a-cidr"


def test_empty_interface_address_means_none():
    assert normalise_interface("") is None
    assert normalise_interface("FD00::10/64") == "fd00::10/64"


@pytest.mark.parametrize(
    "text, words",
    [
        ("10.1.2.3/8", "host bits set: the network address must match the mask, use 10.0.0.0/8"),
        ("10.0.0.0", "needs slash notation: a network such as 10.0.0.0/8, or 10.0.0.0/32 for this one address"),
        ("fd00::1", "a network such as fd00::/64, or fd00::1/128 for this one address"),
        ("10.0.0.300/8", "not valid CIDR notation"),
    ],
)
def test_route_cidr_check_says_what_to_fix(text, words):
    with pytest.raises(ArcticApiError) as raised:
        check_network(text, "dest_cidr")
    assert words in raised.value.message
    assert raised.value.code == "INVALID_CIDR"


def test_routes_sort_stably_whatever_order_the_agent_uses():
    a = {"id": 1, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100}
    b = {"id": 2, "source_cidr": None, "dest_cidr": "192.168.200.0/24", "priority": 100}
    assert sorted_routes([a, b]) == sorted_routes([b, a])
    assert "id" not in sorted_routes([a])[0]


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("198.18.0.2", "198.18.0.2:8080"),
        ("198.18.0.2:9000", "198.18.0.2:9000"),
        ("Agent-B.Lab:8080", "agent-b.lab:8080"),
        ("[FD00::2]", "[fd00::2]:8080"),
        ("fd00::2", "[fd00::2]:8080"),
    ],
)
def test_peer_addresses_get_the_default_port(given, canonical):
    assert normalise_address(given) == canonical


def test_ids_match_in_prefixed_or_bare_form():
    assert id_matches(PEER_A, PEER_A)
    assert id_matches(PEER_A, PEER_A.split("_", 1)[1].lower())
    assert not id_matches(PEER_A, PEER_B)
    assert not id_matches(None, PEER_A)


def test_lookup_prefers_ids_and_refuses_ambiguous_names():
    items = [{"id": "svc_1", "name": "svc_2"}, {"id": "svc_2", "name": "web"}, {"id": "svc_3", "name": "web"}]
    assert find_one(items, "svc_2", "service")["id"] == "svc_2"
    assert find_one(items, "missing", "service") is None
    with pytest.raises(ArcticApiError, match="2 services are named 'web'"):
        find_one(items, "web", "service")


# -- argument spec ---------------------------------------------------------------------------


def test_connection_options_fall_back_to_the_awx_credential_env_vars(monkeypatch):
    monkeypatch.setenv("ARCTIC_AGENT_URL", "http://198.18.0.9:8080")
    monkeypatch.setenv("ARCTIC_CLIENT_ID", "cli_env")
    monkeypatch.setenv("ARCTIC_CLIENT_SECRET", "sec_env")
    monkeypatch.setenv("ARCTIC_AGENT_TOKEN", "tok_env")
    with patch_module_args({"agent_url": "http://explicit:8080"}):
        module = AnsibleModule(argument_spec=arctic_argument_spec())
    assert module.params["agent_url"] == "http://explicit:8080"  # task arguments win
    assert module.params["client_id"] == "cli_env"
    assert module.params["client_secret"] == "sec_env"
    assert module.params["agent_token"] == "tok_env"
    assert module.params["validate_certs"] is True
    assert module.params["timeout"] == 30


def test_secrets_are_never_logged():
    spec = arctic_argument_spec()
    assert spec["agent_token"]["no_log"] and spec["client_secret"]["no_log"]


def test_default_agent_is_the_local_one(monkeypatch):
    monkeypatch.delenv("ARCTIC_AGENT_URL", raising=False)
    with patch_module_args({}):
        module = AnsibleModule(argument_spec=arctic_argument_spec())
    assert module.params["agent_url"] == "http://127.0.0.1:8080"


# -- authentication --------------------------------------------------------------------------


def test_agent_token_is_sent_as_bearer(agent):
    agent.token = "tok_1"
    ArcticClient(StubModule(agent_token="tok_1")).peers()
    assert agent.calls[-1].headers["Authorization"] == "Bearer tok_1"
    assert agent.calls[-1].path == "/v1/peers"  # trailing slash of agent_url is not doubled


def test_client_credentials_mint_one_token_with_a_form_post(agent):
    agent.clients = {"cli_1": "sec_1"}
    client = ArcticClient(StubModule(client_id="cli_1", client_secret="sec_1"))
    client.peers()
    client.services()
    token_calls = [c for c in agent.calls if c.path == "/v1/oauth/token"]
    assert len(token_calls) == 1
    assert token_calls[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert token_calls[0].body == {"grant_type": "client_credentials", "client_id": "cli_1", "client_secret": "sec_1"}
    assert agent.calls[-1].headers["Authorization"] == "Bearer minted-1"


def test_expired_minted_token_is_renewed_once(agent):
    agent.clients = {"cli_1": "sec_1"}
    agent.expired_tokens = {"minted-1"}
    assert ArcticClient(StubModule(client_id="cli_1", client_secret="sec_1")).peers()
    assert agent.minted == 2


def test_refused_client_credentials_name_the_client(agent):
    agent.clients = {"cli_1": "sec_1"}
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule(client_id="cli_1", client_secret="wrong")).peers()
    assert raised.value.message == "the agent refused the client credentials of cli_1: invalid client credentials"
    assert (raised.value.code, raised.value.status) == ("UNAUTHORIZED", 401)


def test_refusal_without_any_credentials_says_how_to_give_them(agent):
    agent.token = "tok_1"
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule()).peers()
    assert raised.value.message == (
        "unauthorized (no credentials were given: set agent_token, or client_id and client_secret "
        "(or ARCTIC_AGENT_TOKEN, ARCTIC_CLIENT_ID and ARCTIC_CLIENT_SECRET))"
    )
    assert (raised.value.code, raised.value.status) == ("UNAUTHORIZED", 401)


# -- error mapping ---------------------------------------------------------------------------


def test_agent_refusal_keeps_its_message_code_and_status(agent):
    agent.raw_answers[("GET", "/v1/peers")] = (403, '{"error": "needs scope peers.read", "code": "FORBIDDEN"}')
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule()).peers()
    refusal = (raised.value.message, raised.value.code, raised.value.status)
    assert refusal == ("needs scope peers.read", "FORBIDDEN", 403)


def test_non_json_error_is_reported_with_a_snippet(agent):
    agent.raw_answers[("GET", "/v1/peers")] = (502, "<html>Bad Gateway</html>")
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule()).peers()
    assert raised.value.message == "the agent answered HTTP 502 to GET /v1/peers: <html>Bad Gateway</html>"
    assert raised.value.code == "BAD_RESPONSE"


def test_no_answer_at_all_is_agent_unreachable(agent):
    agent.unreachable = True
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule()).peers()
    assert raised.value.code == "AGENT_UNREACHABLE" and raised.value.status is None  # no HTTP status: none
    assert raised.value.message.startswith("cannot reach the Arctic agent at http://agent.test:8080: ")


def test_fail_reports_msg_code_and_status():
    captured = {}

    class Module:
        def fail_json(self, **kwargs):
            captured.update(kwargs)
            raise SystemExit(1)

    with pytest.raises(SystemExit):
        ArcticApiError("Service not found", "NOT_FOUND", 404).fail(Module())
    assert captured == {"msg": "Service not found", "code": "NOT_FOUND", "status": 404}


@pytest.mark.parametrize("status", [None, -1, 0, 200.0, True, 600, "404"])
def test_a_failed_result_carries_status_only_when_it_is_an_http_status(status):
    captured = {}

    class Module:
        def fail_json(self, **kwargs):
            captured.update(kwargs)
            raise SystemExit(1)

    with pytest.raises(SystemExit):
        ArcticApiError("no answer", "AGENT_UNREACHABLE", status).fail(Module())
    assert captured == {"msg": "no answer", "code": "AGENT_UNREACHABLE"}
    assert not is_http_status(status)


# -- the agent's Warning headers ---------------------------------------------------------------


def test_agent_warning_headers_reach_the_user_through_module_warn_once_each(agent):
    agent.warning_header = ('299 arctic "agent-b (peer_b) was not asked for its dry run: no answer", '
                            '299 arctic "a \\"quoted\\" notice"')
    module = StubModule()
    client = ArcticClient(module)
    client.get("/v1/peers")
    client.get("/v1/services")
    assert module.warnings == [
        "agent http://agent.test:8080: agent-b (peer_b) was not asked for its dry run: no answer",
        'agent http://agent.test:8080: a "quoted" notice',
    ]


def test_warning_values_are_parsed_like_rfc_7234_and_anything_else_is_kept_whole():
    assert warning_texts('299 arctic "one", 299 arctic "two, with a comma"') == ["one", "two, with a comma"]
    assert warning_texts("something odd") == ["something odd"]
    assert warning_texts("") == [] and warning_texts(None) == []


# -- lookups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["branch", PEER_B, PEER_B.split("_", 1)[1]])
def test_peers_resolve_by_name_or_id(agent, ref):
    assert ArcticClient(StubModule()).resolve_peer(ref)["id"] == PEER_B


def test_unknown_peer_lists_the_known_ones(agent):
    with pytest.raises(ArcticApiError) as raised:
        ArcticClient(StubModule()).resolve_peer("nowhere")
    assert raised.value.message == (
        f"no peer has id or name 'nowhere' (known peers: 'gateway' ({PEER_A}), 'branch' ({PEER_B}))"
    )
    assert raised.value.code == "NOT_FOUND"


def test_peer_list_is_read_once_per_run(agent):
    client = ArcticClient(StubModule())
    client.resolve_peer("branch")
    client.resolve_peer("gateway")
    assert [c.path for c in agent.calls] == ["/v1/peers"]


def test_services_resolve_by_name_or_id_in_detail_form(agent):
    web = agent.add_service("web", routes=[{"priority": 100, "dest_cidr": "192.168.100.0/24"}])
    client = ArcticClient(StubModule())
    assert client.find_service("web")["routes"][0]["dest_cidr"] == "192.168.100.0/24"
    assert client.find_service(web["id"])["name"] == "web"
    assert client.find_service("other") is None


def test_wrapped_lists_are_tolerated(agent):
    agent.raw_answers[("GET", "/v1/peers")] = (200, '{"peers": [{"id": "peer_x", "name": "x"}]}')
    assert ArcticClient(StubModule()).resolve_peer("x")["id"] == "peer_x"


def test_plan_is_none_when_the_agent_has_no_dry_run(agent):
    agent.plan_supported = False
    assert ArcticClient(StubModule()).plan([{"op": "service.delete", "service_id": "svc_1"}]) is None


def test_plan_sends_the_changes(agent):
    plan = ArcticClient(StubModule()).plan([{"op": "service.delete", "service_id": "svc_1"}])
    assert plan["valid"] is True
    assert agent.calls[-1].body == {"changes": [{"op": "service.delete", "service_id": "svc_1"}]}


def test_every_peer_gets_its_own_header_in_the_prepared_diff_and_missing_ones_say_why():
    peers = [
        {"peer_id": PEER_A, "name": "gateway", "valid": True, "diff": "--- a/nftables\n+rule", "error": None},
        {"peer_id": PEER_B, "name": "branch", "valid": True, "diff": "+macvlan\n", "error": None},
        {"peer_id": "peer_c", "name": None, "valid": None, "diff": None, "error": "no answer within 10 s"},
        {"peer_id": "peer_d", "name": "d", "valid": False, "diff": None, "error": None,
         "errors": [{"code": "NOT_FOUND", "error": "service not found: svc_1"}]},
        {"peer_id": "peer_e", "name": "e", "valid": True, "diff": "", "error": None},
    ]
    assert prepared_text(peers) == (
        f"=== gateway ({PEER_A}): kernel changes ===\n--- a/nftables\n+rule\n"
        f"=== branch ({PEER_B}): kernel changes ===\n+macvlan\n"
        "=== peer_c: not previewed ===\n# no answer within 10 s\n"
        "=== d (peer_d): would refuse this change ===\n# service not found: svc_1\n"
        "=== e (peer_e): no kernel change ===\n"
    )


def test_an_agent_without_per_peer_plans_is_shown_by_its_kernel_diff():
    peers = plan_peers({"valid": True, "kernel_diff": {PEER_B: "+b\n", PEER_A: "+a\n"}})
    assert prepared_text(peers) == f"=== {PEER_A}: kernel changes ===\n+a\n=== {PEER_B}: kernel changes ===\n+b\n"


# -- collection metadata ---------------------------------------------------------------------


def test_action_group_lists_every_module_and_every_module_says_so():
    with open(os.path.join(COLLECTION_ROOT, "meta", "runtime.yml")) as handle:
        group = yaml.safe_load(handle)["action_groups"]["fleet"]
    modules_dir = os.path.join(COLLECTION_ROOT, "plugins", "modules")
    modules = sorted(name[:-3] for name in os.listdir(modules_dir) if re.match(r"^arctic_\w+\.py$", name))
    assert sorted(group) == modules
    for name in modules:
        with open(os.path.join(modules_dir, name + ".py")) as handle:
            assert "arctic.fleet.attributes.action_group" in handle.read(), name
