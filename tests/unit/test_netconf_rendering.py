"""From store records to this peer's desired kernel state and data-plane config (pure, no kernel)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from arctic.config import parse_config
from arctic.dataplane.config import parse_config as parse_dataplane_config
from arctic.netconf import rendering
from arctic.store.records import Peer, Route, Service

A, B, C = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA", "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB", "peer_01HZY3K8J5Q2W9V4XN7R6T0CCC"
KEY = base64.b64encode(bytes(32)).decode()
T = "2026-01-01T00:00:00Z"


def peer(pid: str, address: str, state: str = "active") -> Peer:
    return Peer(pid, pid[-3:], KEY, address, pid == A, state, T, T)


def service(sid: str, source: str, target: str, *routes: tuple, **fields) -> Service:
    base = dict(name=None, transport_type="tcp", requires_interface=False, desired_ipv4_cidr=None,
                desired_ipv6_cidr=None, fully_transparent=False, bandwidth_limit_mbps=0, interface_name=None,
                interface_mac=None, interface_ipv4_cidr=None, interface_ipv6_cidr=None, next_route_id=1,
                created_at=T, updated_at=T)
    base.update(fields)
    made = [Route(sid, i + 1, prio, src, dst, seq, T, T) for i, (src, dst, prio, seq) in enumerate(routes)]
    return Service(sid, source_peer_id=source, target_peer_id=target, **base, routes=made)


OUT = service("svc_01HZY3K8J5Q2W9V4XN7R6T0S01", A, B, (None, "192.168.100.0/24", 100, 1), bandwidth_limit_mbps=50)
IN = service("svc_01HZY3K8J5Q2W9V4XN7R6T0S02", B, A, ("10.0.0.0/8", None, 100, 2), requires_interface=True)
ELSEWHERE = service("svc_01HZY3K8J5Q2W9V4XN7R6T0S03", B, C, (None, "192.168.200.0/24", 100, 3))
TO_REVOKED = service("svc_01HZY3K8J5Q2W9V4XN7R6T0S04", A, C, (None, "192.168.7.0/24", 100, 4))
PEERS = [peer(A, "198.18.0.1:8080"), peer(B, "198.18.0.2:8080"), peer(C, "198.18.0.3:8080", "revoked")]
CONFIG = parse_config({"data_dir": "/var/lib/arctic", "tunnel": {"encryption": "none"}}, env={})


def test_the_view_holds_the_services_of_this_peer_whose_peers_are_both_members():
    view = rendering.build_view(A, PEERS, [OUT, IN, ELSEWHERE, TO_REVOKED])
    assert [s.id for s in view.services] == [OUT.id, IN.id]
    assert rendering.build_view(A, PEERS, [OUT, IN], enabled=False).services == ()  # licence: data plane off


def test_desired_state_carries_routes_with_their_precedence_inputs():
    desired = rendering.desired_state(rendering.build_view(A, PEERS, [OUT, IN]), CONFIG)
    assert [s.id for s in desired.outbound_services()] == [OUT.id]
    assert [s.id for s in desired.interface_services()] == [IN.id]  # the MACVLAN lives on the target
    route = desired.outbound_services()[0].routes[0]
    assert (route.dest_cidr, route.priority, route.seq) == ("192.168.100.0/24", 100, 1)


def test_both_ends_shape_towards_the_other_peer():
    links = rendering.qos_links(rendering.build_view(A, PEERS, [OUT, IN]))
    assert {(x.service_id, x.peer_address, x.rate_mbps) for x in links} == {(OUT.id, "198.18.0.2", 50),
                                                                          (IN.id, "198.18.0.2", 0)}


@pytest.mark.parametrize("address, expected", [
    ("198.18.0.2:8080", "198.18.0.2"), ("[fd00::2]:8080", "fd00::2"), ("fd00::2", "fd00::2"),
    ("localhost:8080", "127.0.0.1"),  # names are resolved (from /etc/hosts here: no network in unit tests)
])
def test_tunnel_address_is_the_host_part_of_the_api_address(address, expected):
    assert rendering.tunnel_address(address) == expected


def test_the_rendered_data_plane_config_is_accepted_by_the_data_plane(tmp_path: Path):
    view = rendering.build_view(A, PEERS, [OUT, IN])
    doc = rendering.dataplane_config(view, CONFIG, priorities={OUT.id: [0x610128, 0x610129]},
                                     bind_addresses={IN.id: "192.168.100.10", OUT.id: "10.9.9.9"})
    cfg = parse_dataplane_config(doc, base_dir=tmp_path)
    assert cfg.encryption == "none" and set(cfg.peers) == {A, B}  # the revoked peer is not trusted
    assert cfg.peers[B].tunnel_address == "198.18.0.2"
    out, inbound = cfg.services_by_id[OUT.id], cfg.services_by_id[IN.id]
    assert out.slot_priorities == (0x610128, 0x610129) and out.bind_address is None  # bind is a target concern
    assert inbound.bind_address == "192.168.100.10"
    assert [r.id for r in cfg.source_routes] == [1] and cfg.route_for("10.0.0.2", "192.168.100.5")[1].id == OUT.id


def test_bind_address_prefers_ipv4():
    assert rendering.bind_address("192.168.100.10/24", "fd00::10/64") == "192.168.100.10"
    assert rendering.bind_address(None, "fd00::10/64") == "fd00::10"
    assert rendering.bind_address(None, None) is None


def test_dataplane_settings_are_validated_by_key():
    assert CONFIG.dataplane.keep_on_stop is True and CONFIG.dataplane.enabled is True
    cfg = parse_config({"dataplane": {"keep_on_stop": False, "drain_seconds": 2}}, env={})
    assert cfg.dataplane.keep_on_stop is False and cfg.dataplane.drain_seconds == 2.0
    assert parse_config({"dataplane": {"workers": 4}}, env={}).dataplane.workers == 4
    for bad in ({"keep": True}, {"enabled": "yes"}, {"drain_seconds": -1}, {"workers": -1}, {"workers": True}):
        with pytest.raises(ValueError, match="dataplane"):
            parse_config({"dataplane": bad}, env={})
