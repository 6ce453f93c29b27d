"""What policy routing and sysctls the desired state asks for, and how sysctls are recorded and put back."""

from __future__ import annotations

from pathlib import Path

from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec
from arctic.netconf.policy import policy_spec, spec_lines
from arctic.netconf.sysctl import Sysctls, converge_sysctls, desired_sysctls, sysctl_path

A = "svc_A"


def svc(*routes: RouteSpec, source="peer_a", target="peer_b", iface=False, transparent=False, v6=None):
    return ServiceSpec(A, source, target, "tcp", iface, None, v6, transparent, 0, tuple(routes))


def test_an_intercepting_peer_gets_the_fwmark_rule_and_local_routes_for_both_families():
    spec = policy_spec(DesiredState("peer_a", (svc(RouteSpec(A, 1, None, "192.168.100.0/24", 1, 1)),)))
    assert spec_lines(spec) == [
        "ip -4 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080",
        "ip -6 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080",
        "ip -4 route add local 0.0.0.0/0 dev lo table 61080",
        "ip -6 route add local ::/0 dev lo table 61080",
    ]
    assert spec.required_families == {4}  # IPv6 is best effort unless an IPv6 route needs it


def test_ipv6_routes_make_ipv6_policy_routing_required():
    spec = policy_spec(DesiredState("peer_a", (svc(RouteSpec(A, 1, "fd00::/64", None, 1, 1)),)))
    assert spec.required_families == {6}


def test_a_transparent_target_needs_policy_routing_and_a_plain_target_does_not():
    transparent = policy_spec(DesiredState("peer_b", (svc(iface=True, transparent=True),)))
    plain = policy_spec(DesiredState("peer_b", (svc(iface=True),)))
    nothing = policy_spec(DesiredState("peer_c", (svc(),)))
    assert transparent.needed and not plain.needed and not nothing.needed


def test_sysctls_enable_forwarding_for_intercepted_families_and_loose_rp_filter_on_service_interfaces():
    desired = DesiredState("peer_a", (svc(RouteSpec(A, 1, None, "10.0.0.0/8", 1, 1)),))
    assert desired_sysctls(desired, ["arc0123456789"]) == {
        "net.ipv4.ip_forward": "1", "net.ipv4.conf.arc0123456789.rp_filter": "2"}


def test_sysctl_names_with_dotted_interface_names_map_to_the_right_proc_path():
    assert sysctl_path("net.ipv4.conf.eth0.100.rp_filter", Path("/p")) == Path("/p/net/ipv4/conf/eth0.100/rp_filter")
    assert sysctl_path("net.ipv4.ip_forward", Path("/p")) == Path("/p/net/ipv4/ip_forward")


def _fake_proc(tmp_path: Path, values: dict[str, str]) -> Sysctls:
    for name, value in values.items():
        path = sysctl_path(name, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return Sysctls(tmp_path)


def test_changed_sysctls_are_recorded_and_restored_when_no_longer_needed(tmp_path: Path):
    sysctls = _fake_proc(tmp_path, {"net.ipv4.ip_forward": "0", "net.ipv4.conf.eth0.rp_filter": "1"})
    changes, record = converge_sysctls({"net.ipv4.ip_forward": "1"}, sysctls, {})
    assert changes == ["sysctl -w net.ipv4.ip_forward=1"] and sysctls.read("net.ipv4.ip_forward") == "1"
    assert record == {"net.ipv4.ip_forward": {"before": "0", "applied": "1"}}
    assert converge_sysctls({"net.ipv4.ip_forward": "1"}, sysctls, record) == ([], record)  # idempotent
    changes, record = converge_sysctls({}, sysctls, record)
    assert changes == ["sysctl -w net.ipv4.ip_forward=0"] and record == {}
    assert sysctls.read("net.ipv4.conf.eth0.rp_filter") == "1"  # never touched


def test_a_sysctl_someone_else_changed_after_us_is_left_alone(tmp_path: Path):
    sysctls = _fake_proc(tmp_path, {"net.ipv4.ip_forward": "0"})
    _, record = converge_sysctls({"net.ipv4.ip_forward": "1"}, sysctls, {})
    sysctls.write("net.ipv4.ip_forward", "7")
    changes, _ = converge_sysctls({}, sysctls, record)
    assert changes == [] and sysctls.read("net.ipv4.ip_forward") == "7"


def test_a_value_that_was_already_right_is_not_restored_later(tmp_path: Path):
    sysctls = _fake_proc(tmp_path, {"net.ipv4.ip_forward": "1"})
    _, record = converge_sysctls({"net.ipv4.ip_forward": "1"}, sysctls, {})
    changes, _ = converge_sysctls({}, sysctls, record)
    assert changes == [] and sysctls.read("net.ipv4.ip_forward") == "1"
