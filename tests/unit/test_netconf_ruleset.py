"""table inet arctic as rendered from the desired state: precedence order, families, sets, atomic script."""

from __future__ import annotations

import ipaddress
import random

import pytest
from arctic.domain import precedence
from arctic.netconf.constants import FWMARK, FWMARK_MASK
from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec
from arctic.netconf.errors import DesiredStateError
from arctic.netconf.ruleset import build_ruleset, mark_statement, render_script, render_table
from hypothesis import given, settings
from hypothesis import strategies as st

A = "svc_01HAAAAAAAAAAAAAAAAAAAAAAA"
B = "svc_01HBBBBBBBBBBBBBBBBBBBBBBB"
MARK = "meta mark set meta mark & 0xff00ffff | 0x001a0000"
SYN = "tcp flags syn / fin,syn,rst,ack"  # only a connection's first packet is diverted; its socket takes the rest


def service(sid: str, *routes: RouteSpec, source: str = "peer_a", target: str = "peer_b",
            requires_interface: bool = False, transparent: bool = False) -> ServiceSpec:
    return ServiceSpec(sid, source, target, "tcp", requires_interface, None, None, transparent, 0, tuple(routes))


def route(sid: str, rid: int, src: str | None, dst: str | None, priority: int = 100, seq: int | None = None):
    return RouteSpec(sid, rid, src, dst, priority, rid if seq is None else seq)


def intercept_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if "tproxy" in ln]


def test_seed_precedence_example_across_two_services_renders_in_the_documented_order():
    # The seed's table: (200, 10.1/16 -> 192.168.100/24), (100, 10/8 -> 192.168.100/24), (100, 10/8 -> 192.168/16),
    # here split over two services and created in the "wrong" order, so only precedence can produce the order.
    svc_a = service(A, route(A, 1, "10.0.0.0/8", "192.168.0.0/16", 100, seq=1),
                    route(A, 2, "10.1.0.0/16", "192.168.100.0/24", 200, seq=3))
    svc_b = service(B, route(B, 1, "10.0.0.0/8", "192.168.100.0/24", 100, seq=2))
    text = render_table(build_ruleset(DesiredState("peer_a", (svc_a, svc_b))))
    assert text == (
        "table inet arctic {\n"
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority mangle - 1; policy accept;\n"
        f"\t\ttcp flags != syn / fin,syn,rst,ack socket transparent 1 {MARK} accept comment"
        ' "arctic: packets of proxied connections and Transparent Mode replies"\n'
        '\t\tfib daddr type local accept comment "arctic: traffic for this host is never intercepted"\n'
        f"\t\tip saddr 10.1.0.0/16 ip daddr 192.168.100.0/24 {SYN} tproxy ip to :61080 {MARK} accept"
        f' comment "arctic {A} route 2"\n'
        f"\t\tip saddr 10.0.0.0/8 ip daddr 192.168.100.0/24 {SYN} tproxy ip to :61080 {MARK} accept"
        f' comment "arctic {B} route 1"\n'
        f"\t\tip saddr 10.0.0.0/8 ip daddr 192.168.0.0/16 {SYN} tproxy ip to :61080 {MARK} accept"
        f' comment "arctic {A} route 1"\n'
        "\t}\n"
        "}\n"
    )


def test_ipv6_routes_match_with_ip6_and_divert_with_tproxy_ip6():
    svc = service(A, route(A, 1, "fd00:10::/64", "fd00:200::/48"), route(A, 2, None, "2001:db8::/32"))
    lines = intercept_lines(render_table(build_ruleset(DesiredState("peer_a", (svc,)))))
    assert lines == [
        f'ip6 saddr fd00:10::/64 ip6 daddr fd00:200::/48 {SYN} tproxy ip6 to :61080 {MARK} accept'
        f' comment "arctic {A} route 1"',
        f'ip6 daddr 2001:db8::/32 {SYN} tproxy ip6 to :61080 {MARK} accept comment "arctic {A} route 2"',
    ]


def test_source_only_and_destination_only_routes_match_one_address_and_follow_their_class():
    svc = service(A, route(A, 1, None, "192.168.100.0/24", 500), route(A, 2, "10.0.0.0/8", None, 1),
                  route(A, 3, "10.9.9.9/32", "192.168.200.7/32"))
    lines = intercept_lines(render_table(build_ruleset(DesiredState("peer_a", (svc,), tproxy_port=7000))))
    assert [ln.split(f" {SYN} tproxy")[0] for ln in lines] == [
        "ip saddr 10.9.9.9 ip daddr 192.168.200.7",  # both CIDRs: first; host prefixes as nft prints
        "ip saddr 10.0.0.0/8",  # source-only before destination-only, whatever the priority
        "ip daddr 192.168.100.0/24",
    ]
    assert all("tproxy ip to :7000 " in ln for ln in lines)


def test_only_services_sourced_at_this_peer_are_intercepted():
    here = service(A, route(A, 1, None, "192.168.100.0/24"))
    elsewhere = service(B, route(B, 1, None, "192.168.200.0/24"), source="peer_c", target="peer_a")
    text = render_table(build_ruleset(DesiredState("peer_a", (here, elsewhere))))
    assert "192.168.100.0/24" in text and "192.168.200.0/24" not in text


def test_runs_of_one_shape_become_a_set_rule_at_the_runs_position():
    svc_a = service(A, route(A, 1, None, "192.168.1.0/24"), route(A, 2, None, "192.168.2.0/24"),
                    route(A, 3, "10.0.0.0/8", "172.31.0.0/16"))
    svc_b = service(B, route(B, 1, None, "192.168.3.0/24", seq=9), route(B, 2, None, "172.31.0.0/16", seq=10))
    rs = build_ruleset(DesiredState("peer_a", (svc_a, svc_b)))
    text = render_table(rs)
    assert [ln.split(f" {SYN} tproxy")[0] for ln in intercept_lines(text)] == [
        "ip saddr 10.0.0.0/8 ip daddr 172.31.0.0/16",
        "ip daddr @v4_dst24",  # three /24 destinations of two services, one lookup
        "ip daddr 172.31.0.0/16",
    ]
    assert "\tset v4_dst24 {\n\t\ttype ipv4_addr\n\t\tflags interval\n" in text
    assert (f'elements = {{ 192.168.1.0/24 comment "arctic {A} route 1",\n'
            f'\t\t\t     192.168.2.0/24 comment "arctic {A} route 2",\n'
            f'\t\t\t     192.168.3.0/24 comment "arctic {B} route 1" }}') in text
    assert 'comment "arctic 3 routes: IPv4 destination /24"' in text


def test_source_and_destination_runs_use_a_concatenated_set():
    svc = service(A, route(A, 1, "10.1.0.0/16", "192.168.1.0/24"), route(A, 2, "10.2.0.0/16", "192.168.1.0/24"))
    text = render_table(build_ruleset(DesiredState("peer_a", (svc,))))
    assert "type ipv4_addr . ipv4_addr" in text
    assert f"ip saddr . ip daddr @v4_src16_dst24 {SYN} tproxy ip to :61080" in text
    assert f'10.1.0.0/16 . 192.168.1.0/24 comment "arctic {A} route 1"' in text


def test_an_exact_duplicate_keeps_the_winning_route_and_reports_the_shadowed_one():
    svc_a = service(A, route(A, 1, None, "192.168.1.0/24", 100, seq=2), route(A, 2, None, "192.168.2.0/24"))
    svc_b = service(B, route(B, 1, None, "192.168.1.0/24", 300, seq=5))
    rs = build_ruleset(DesiredState("peer_a", (svc_a, svc_b)))
    text = render_table(rs)
    assert f'192.168.1.0/24 comment "arctic {B} route 1"' in text  # higher priority wins
    assert f"arctic {A} route 1" not in text
    assert [(e.service_id, e.route_id) for e in rs.shadowed] == [(A, 1)]


def test_service_order_in_the_input_does_not_change_the_rules():
    svcs = [service(A, route(A, 1, "10.0.0.0/8", None, seq=4), route(A, 2, None, "192.168.0.0/16", seq=1)),
            service(B, route(B, 1, "10.1.0.0/16", None, seq=3), route(B, 2, None, "192.168.7.0/24", seq=2))]
    one = render_table(build_ruleset(DesiredState("peer_a", tuple(svcs))))
    other = render_table(build_ruleset(DesiredState("peer_a", tuple(reversed(svcs)))))
    assert one == other


_V4 = st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
                st.ip_addresses(v=4, network=ipaddress.ip_network("10.0.0.0/8")), st.integers(6, 26))
_V6 = st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)),
                st.ip_addresses(v=6, network=ipaddress.ip_network("fd00::/16")), st.integers(16, 64))


@st.composite
def _routes(draw) -> list[RouteSpec]:
    out = []
    for i in range(draw(st.integers(1, 25))):
        nets = draw(st.sampled_from([_V4, _V6]))
        src, dst = draw(st.one_of(st.none(), nets)), draw(st.one_of(st.none(), nets))
        if src is None and dst is None:
            dst = draw(nets)
        out.append(RouteSpec(draw(st.sampled_from([A, B])), i + 1, src, dst, draw(st.integers(0, 3)), i))
    return out


@settings(max_examples=150, deadline=None)
@given(_routes())
def test_grouped_rules_keep_every_route_in_precedence_order_and_cover_exactly_the_same_traffic(routes):
    svcs = tuple(service(sid, *[r for r in routes if r.service_id == sid]) for sid in (A, B))
    rs = build_ruleset(DesiredState("peer_a", svcs))
    # 1. Within one family, flattening the rules gives the routes in precedence order (groups never reorder).
    positions = {}
    for index, rule in enumerate(rs.rules):
        for entry in rule.routes:
            positions[(entry.service_id, entry.route_id)] = (index, entry.family)
    ordered = [r for r in precedence.ordered(routes) if (r.service_id, r.route_id) in positions]
    for family in (4, 6):
        rule_indexes = [positions[(r.service_id, r.route_id)][0] for r in ordered
                        if positions[(r.service_id, r.route_id)][1] == family]
        assert rule_indexes == sorted(rule_indexes)
    # 2. Exactly the same connections are intercepted as with one linear rule per route.
    kept = [e for rule in rs.rules for e in rule.routes]
    rng = random.Random(len(routes))
    for r in routes:
        for _ in range(3):
            src = _sample(r.source_cidr, rng, family_of=r.dest_cidr)
            dst = _sample(r.dest_cidr, rng, family_of=r.source_cidr)
            linear = precedence.first_match(precedence.ordered(routes), src, dst) is not None
            grouped = any(precedence.matches(_as_route(e), src, dst) for e in kept)
            assert grouped == linear


def _sample(cidr: str | None, rng: random.Random, family_of: str | None) -> str:
    net = ipaddress.ip_network(cidr or ("0.0.0.0/0" if ipaddress.ip_network(family_of).version == 4 else "::/0"))
    return str(net.network_address + rng.randrange(min(net.num_addresses, 2**32)))


def _as_route(entry) -> RouteSpec:
    return RouteSpec(entry.service_id, entry.route_id, entry.source and str(entry.source),
                     entry.dest and str(entry.dest), 0, 0)


def test_without_services_there_is_no_table_and_the_script_deletes_it():
    rs = build_ruleset(DesiredState("peer_a", ()))
    assert rs.present is False and render_table(rs) == ""
    script = render_script(rs)
    assert [ln for ln in script.splitlines() if not ln.startswith("#")] == [
        "table inet arctic {}", "delete table inet arctic"]


def test_replace_script_is_one_transaction_that_never_leaves_a_gap():
    svc = service(A, route(A, 1, None, "192.168.100.0/24"))
    rs = build_ruleset(DesiredState("peer_a", (svc,)))
    lines = [ln for ln in render_script(rs).splitlines() if not ln.startswith("#")]
    # create-if-missing (so delete cannot fail), delete, define: nft applies the file as one transaction.
    assert lines[:3] == ["table inet arctic {}", "delete table inet arctic", "table inet arctic {"]
    assert "\n".join(lines[2:]) + "\n" == render_table(rs)
    assert "table ip " not in render_script(rs) and "flush ruleset" not in render_script(rs)


def test_a_transparent_target_gets_the_reply_rule_but_no_interception():
    svc = service(A, route(A, 1, "10.0.0.0/8", "192.168.100.0/24"), requires_interface=True, transparent=True)
    rs = build_ruleset(DesiredState("peer_b", (svc,)))
    text = render_table(rs)
    assert rs.present and rs.transparent_services == (A,)
    assert "socket transparent 1" in text and "tproxy" not in text


def test_the_mark_statement_only_writes_our_byte_of_the_mark():
    assert mark_statement() == MARK
    keep, mark = 0xFF00FFFF, 0x001A0000
    for other in (0, 0x1, 0xFFFF, 0xAB000000, 0x00FF0000, 0xFFFFFFFF):
        result = (other & keep) | mark
        assert result & FWMARK_MASK == FWMARK
        assert result & ~FWMARK_MASK & 0xFFFFFFFF == other & ~FWMARK_MASK & 0xFFFFFFFF


@pytest.mark.parametrize(("routes", "message"), [
    ((route(A, 1, "10.0.0.0/8", "fd00::/64"),), "mixes IPv4 and IPv6"),
    ((route(A, 1, "10.1.2.3/8", None),), "use 10.0.0.0/8"),
    ((route(A, 1, None, None),), "needs a source_cidr, a dest_cidr or both"),
    ((route(A, 1, "10.0.0.0", None),), "slash notation"),
])
def test_routes_that_cannot_be_rendered_are_refused_with_a_message_naming_the_route(routes, message):
    with pytest.raises(DesiredStateError, match=message) as err:
        build_ruleset(DesiredState("peer_a", (service(A, *routes),)))
    assert f"service {A} route 1" in str(err.value)


def test_a_service_id_that_would_need_quoting_in_nft_is_refused():
    bad = service('svc_x" accept; flush ruleset; "', route('svc_x" accept; flush ruleset; "', 1, None, "10.0.0.0/8"))
    with pytest.raises(DesiredStateError, match="may only contain letters"):
        build_ruleset(DesiredState("peer_a", (bad,)))


def test_ten_thousand_routes_render_into_a_handful_of_rules():
    routes = [route(A, i + 1, f"10.{i // 250}.{i % 250}.0/24", f"172.31.{i % 250}.{(i // 250) % 250}/32", seq=i)
              for i in range(10_000)]
    rs = build_ruleset(DesiredState("peer_a", (service(A, *routes),)))
    assert rs.route_count == 10_000
    assert len(rs.rules) == 1 and len(rs.sets[0].elements) == 10_000
