"""Data-plane config: a valid file loads into typed objects; each kind of mistake is refused by key name."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from arctic.dataplane.config import ConfigError, default_stats_path, load_config, parse_config

A = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA"
B = "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB"
KEY = base64.b64encode(bytes(range(32))).decode()


def example() -> dict:
    return {
        "local_peer_id": A, "identity_key_file": "peer.key", "tproxy_port": 61080, "tunnel_port": 61000,
        "tunnel_bind": "0.0.0.0", "encryption": "tls", "drain_seconds": 30, "connect_timeout": 5,
        "peers": {B: {"public_key": KEY, "tunnel_address": "198.18.0.2"}},
        "services": [
            {"id": "svc_01HZY3K8J5Q2W9V4XN7R6T0S01", "source_peer_id": A, "target_peer_id": B,
             "transport_type": "tcp", "fully_transparent": False, "bind_address": None, "so_priority": 0,
             "routes": [{"id": 1, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100,
                         "seq": 17}]},
            {"id": "svc_01HZY3K8J5Q2W9V4XN7R6T0S02", "source_peer_id": A, "target_peer_id": B,
             "routes": [{"id": 1, "dest_cidr": "192.168.0.0/16", "seq": 3},
                        {"id": 2, "source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "seq": 20}]},
        ],
    }


def error_of(doc: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    return str(err.value)


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "dataplane.json"
    path.write_text(json.dumps(example()))
    cfg = load_config(path)
    assert cfg.local_peer_id == A and cfg.encryption == "tls"
    assert cfg.identity_key_file == tmp_path / "peer.key"  # relative to the config file
    assert cfg.peers[B].public_key == bytes(range(32)) and cfg.peers[B].tunnel_address == "198.18.0.2"
    assert default_stats_path(path) == tmp_path / "dataplane.stats.json"


def test_tunnel_sockets_default_to_bbr_and_null_keeps_the_host_default():
    assert parse_config(example()).tunnel_congestion == "bbr"
    assert parse_config({**example(), "tunnel_congestion": None}).tunnel_congestion is None
    assert parse_config({**example(), "tunnel_congestion": "cubic"}).tunnel_congestion == "cubic"


def test_bare_ulids_are_normalised_to_prefixed_ids():
    doc = example()
    doc["local_peer_id"] = A.removeprefix("peer_")
    assert parse_config(doc).local_peer_id == A


def test_source_routes_follow_precedence_across_services():
    cfg = parse_config(example())
    # both-CIDR routes first; among them the longer source prefix (/16) wins; destination-only last
    assert [(r.service_id[-3:], r.id) for r in cfg.source_routes] == [("S02", 2), ("S01", 1), ("S02", 1)]
    route, service = cfg.route_for("10.1.2.3", "192.168.100.5")
    assert service.id.endswith("S02") and route.id == 2
    route, service = cfg.route_for("10.9.9.9", "192.168.100.5")
    assert service.id.endswith("S01")
    route, service = cfg.route_for("172.16.0.1", "192.168.7.7")
    assert service.id.endswith("S02") and route.id == 1
    assert cfg.route_for("10.0.0.2", "8.8.8.8") is None


def test_services_where_we_are_not_the_source_do_not_intercept():
    doc = example()
    for svc in doc["services"]:
        svc["source_peer_id"], svc["target_peer_id"] = B, A
    cfg = parse_config(doc)
    assert cfg.source_routes == () and cfg.route_for("10.0.0.2", "192.168.100.2") is None
    assert cfg.services_by_id[doc["services"][0]["id"]].admits("10.0.0.2", "192.168.100.2")


@pytest.mark.parametrize(("mutate", "named"), [
    (lambda d: d.update(tproxy_prot=1), "tproxy_prot: unknown key"),
    (lambda d: d.pop("local_peer_id"), "local_peer_id: required key is missing"),
    (lambda d: d.update(encryption="aes"), "encryption: must be one of tls, none"),
    (lambda d: d.update(tunnel_port=0), "tunnel_port: must be an integer from 1 to 65535"),
    (lambda d: d.update(tproxy_port="61080"), "tproxy_port: must be an integer"),
    (lambda d: d.update(connect_timeout=True), "connect_timeout: must be a number"),
    (lambda d: d.update(tunnel_bind="any"), "tunnel_bind: must be an IPv4 or IPv6 address"),
    (lambda d: d.update(tunnel_congestion="vegas"), "tunnel_congestion: must be one of bbr, cubic, reno or null"),
    (lambda d: d.update(kcp_port=70000), "kcp_port: must be an integer from 1 to 65535"),
    (lambda d: d.update(kcp_fec="sometimes"), "kcp_fec: must be one of"),
    (lambda d: d.update(kcp_window=8), "kcp_window: must be an integer from 32 to 32768"),
    (lambda d: d.update(kcp_rate_mbit=-1), "kcp_rate_mbit: must be an integer from 0"),
    (lambda d: d.update(workers=-1), "workers: must be an integer from 0 to 256"),
    (lambda d: d["peers"][B].update(public_key="c2hvcnQ="), f"peers.{B}.public_key: must be the base64"),
    (lambda d: d["peers"][B].update(tunnel_address="agent-b"), f"peers.{B}.tunnel_address"),
    (lambda d: d["peers"][B].update(port=1), f"peers.{B}.port: unknown key"),
    (lambda d: d["peers"].update({"bob": {}}), "peers.bob: must be a peer id"),
    (lambda d: d["services"][0].update(transport_type="udp"), "services[0].transport_type: must be one of"),
    (lambda d: d["services"][0].update(fully_transparent="yes"), "services[0].fully_transparent: must be true"),
    (lambda d: d["services"][0].update(bind_address="eth0"), "services[0].bind_address"),
    (lambda d: d["services"][0].update(so_priority=-1), "services[0].so_priority"),
    (lambda d: d["services"][1].update(id=d["services"][0]["id"]), "services[1].id: service"),
    (lambda d: d["services"][0]["routes"][0].update(dest_cidr="192.168.100.7/24"),
     "services[0].routes[0].dest_cidr '192.168.100.7/24' has host bits set"),
    (lambda d: d["services"][0]["routes"][0].pop("seq"), "services[0].routes[0].seq: required key is missing"),
    (lambda d: d["services"][0]["routes"][0].update(source_cidr=None, dest_cidr=None),
     "services[0].routes[0]: needs source_cidr or dest_cidr"),
    (lambda d: d["services"][0]["routes"][0].update(dest_cidr="fd00::/64"),
     "services[0].routes[0]: source_cidr and dest_cidr must be the same address family"),
])
def test_mistakes_are_refused_naming_the_key(mutate, named):
    doc = copy.deepcopy(example())
    mutate(doc)
    assert named in error_of(doc)


def test_unreadable_or_non_json_files_give_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
