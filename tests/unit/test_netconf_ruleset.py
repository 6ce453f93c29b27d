"""table inet arctic as rendered from the desired state: precedence order, families, sets, atomic script."""

from __future__ import annotations

import ipaddress
import os
import random
from pathlib import Path

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


# --- golden renderings ---------------------------------------------------------------------------------------------
# Every action's text (show, replace, delete) and what build_ruleset reports for a broad set of desired states,
# compared byte for byte with tests/unit/netconf_ruleset.golden. It pins the kernel text while the nft grammar
# moves between Python and templates/nftables.nft.j2. After an intended change of the text, regenerate with
#   ARCTIC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_netconf_ruleset.py -k golden
# and review the file's diff (it is the change to the kernel configuration).

GOLDEN = Path(__file__).with_name("netconf_ruleset.golden")
C = "svc_01HCCCCCCCCCCCCCCCCCCCCCCC"


def _random_routes(seed: int, count: int) -> tuple[ServiceSpec, ...]:
    """Mixed families, classes and a few prefix lengths (so runs form and break), duplicates included."""
    rng = random.Random(seed)
    v4, v6 = ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/16")

    def net(base, lengths):
        length = rng.choice(lengths)
        address = base.network_address + (rng.randrange(2 ** 12) << (base.max_prefixlen - base.prefixlen - 12))
        return str(ipaddress.ip_network(f"{address}/{length}", strict=False))

    by_service: dict[str, list[RouteSpec]] = {A: [], B: [], C: []}
    made: list[tuple] = []
    for i in range(count):
        sid = rng.choice((A, B, C))
        if made and rng.random() < 0.1:  # an exact duplicate of an earlier route, in any service
            src, dst = rng.choice(made)
        else:
            base, lengths = (v4, (8, 16, 24, 32)) if rng.random() < 0.6 else (v6, (32, 48, 64, 128))
            klass = rng.choice((0, 1, 2))
            src = net(base, lengths) if klass in (0, 1) else None
            dst = net(base, lengths) if klass in (0, 2) else None
            made.append((src, dst))
        by_service[sid].append(RouteSpec(sid, i + 1, src, dst, rng.randrange(4), i))
    return tuple(service(sid, *routes) for sid, routes in by_service.items() if routes)


def _golden_cases() -> list[tuple[str, DesiredState, dict]]:
    def one(*routes: RouteSpec, **kw) -> DesiredState:
        return DesiredState("peer_a", (service(A, *routes),), **kw)

    transparent = service(C, route(C, 1, "10.0.0.0/8", "192.168.100.0/24"), source="peer_c", target="peer_a",
                          requires_interface=True, transparent=True)
    return [
        ("empty", DesiredState("peer_a", ()), {}),
        ("only services of other peers", DesiredState("peer_z", (service(A, route(A, 1, None, "10.0.0.0/8")),)),
         {}),
        ("proxied connections, no routes", DesiredState("peer_a", (), proxied_connections=True), {}),
        ("v4 source and destination", one(route(A, 1, "10.0.0.0/8", "192.168.100.0/24")), {}),
        ("v4 source only", one(route(A, 1, "10.0.0.0/8", None)), {}),
        ("v4 destination only", one(route(A, 1, None, "192.168.100.0/24")), {}),
        ("v4 host prefixes", one(route(A, 1, "10.9.9.9/32", "192.168.200.7/32"), route(A, 2, "10.1.2.3/32", None),
                                 route(A, 3, None, "0.0.0.0/0")), {}),
        ("v6 source and destination", one(route(A, 1, "fd00:10::/64", "fd00:200::/48")), {}),
        ("v6 source only", one(route(A, 1, "fd00:10::/64", None)), {}),
        ("v6 destination only", one(route(A, 1, None, "2001:db8::/32")), {}),
        ("v6 host prefixes", one(route(A, 1, "fd00::1/128", "fd00::2/128"), route(A, 2, None, "fd00::3/128")),
         {}),
        ("seed example, two services", DesiredState("peer_a", (
            service(A, route(A, 1, "10.0.0.0/8", "192.168.0.0/16", 100, seq=1),
                    route(A, 2, "10.1.0.0/16", "192.168.100.0/24", 200, seq=3)),
            service(B, route(B, 1, "10.0.0.0/8", "192.168.100.0/24", 100, seq=2),
                    route(B, 2, None, "fd00:200::/48", seq=4)))), {}),
        ("v4 destination set", one(route(A, 1, None, "192.168.1.0/24"), route(A, 2, None, "192.168.2.0/24"),
                                   route(A, 3, None, "192.168.3.0/24")), {}),
        ("v4 source set", one(route(A, 1, "10.1.0.0/16", None), route(A, 2, "10.2.0.0/16", None)), {}),
        ("v4 concatenated set", one(route(A, 1, "10.1.0.0/16", "192.168.1.0/24"),
                                    route(A, 2, "10.2.0.0/16", "192.168.1.0/24"),
                                    route(A, 3, "10.2.0.0/16", "192.168.2.0/24")), {}),
        ("v4 host prefix sets", one(route(A, 1, "10.0.0.1/32", "192.168.0.1/32"),
                                    route(A, 2, "10.0.0.2/32", "192.168.0.1/32"),
                                    route(A, 3, None, "192.168.0.7/32"), route(A, 4, None, "192.168.0.8/32")), {}),
        ("v6 destination set", one(route(A, 1, None, "fd00:1::/48"), route(A, 2, None, "fd00:2::/48")), {}),
        ("v6 source set", one(route(A, 1, "fd00:1::/64", None), route(A, 2, "fd00:2::/64", None)), {}),
        ("v6 concatenated set", one(route(A, 1, "fd00:1::/64", "fd00:aa::/48"),
                                    route(A, 2, "fd00:2::/64", "fd00:aa::/48")), {}),
        ("v6 host prefix sets", one(route(A, 1, "fd00::1/128", "fd00::a/128"),
                                    route(A, 2, "fd00::2/128", "fd00::a/128"),
                                    route(A, 3, None, "fd00::b/128"), route(A, 4, None, "fd00::c/128")), {}),
        ("sets and rules of both families interleaved", DesiredState("peer_a", (
            service(A, route(A, 1, None, "192.168.1.0/24"), route(A, 2, None, "192.168.2.0/24"),
                    route(A, 3, "10.0.0.0/8", "172.31.0.0/16"), route(A, 4, None, "fd00:1::/48"),
                    route(A, 5, "fd00:9::/64", None)),
            service(B, route(B, 1, None, "192.168.3.0/24", seq=9), route(B, 2, None, "172.31.0.0/16", seq=10),
                    route(B, 3, None, "fd00:2::/48", seq=11), route(B, 4, "fd00:8::/64", None, seq=12)))), {}),
        ("duplicates: shadowed routes, a run that shrinks to one rule", DesiredState("peer_a", (
            service(A, route(A, 1, None, "192.168.1.0/24", 100, seq=2), route(A, 2, None, "192.168.2.0/24"),
                    route(A, 3, "10.0.0.0/8", None, 100, seq=3)),
            service(B, route(B, 1, None, "192.168.1.0/24", 300, seq=5), route(B, 2, "10.0.0.0/8", None, 1, seq=6))
        )), {}),
        ("custom tproxy port", one(route(A, 1, None, "192.168.1.0/24"), route(A, 2, None, "192.168.2.0/24"),
                                   route(A, 3, "fd00::/64", None), tproxy_port=7000), {}),
        ("set threshold 1: a single route becomes a set", one(route(A, 1, "10.0.0.0/8", "192.168.1.0/24"),
                                                              route(A, 2, None, "fd00::/48")),
         {"set_threshold": 1}),
        ("set threshold 5: runs below it stay rules", one(*(route(A, i, None, f"192.168.{i}.0/24")
                                                            for i in range(1, 5))), {"set_threshold": 5}),
        ("transparent target only", DesiredState("peer_a", (transparent,)), {}),
        ("transparent target and intercepted routes", DesiredState("peer_a", (
            transparent, service(A, route(A, 1, None, "192.168.1.0/24")))), {}),
        ("random 60 routes, seed 1", DesiredState("peer_a", _random_routes(1, 60)), {}),
        ("random 200 routes, seed 2", DesiredState("peer_a", _random_routes(2, 200)), {}),
    ]


def _golden_text(name: str, desired: DesiredState, kw: dict) -> str:
    rs = build_ruleset(desired, **kw)
    ids = lambda entries: " ".join(f"{e.service_id[-1]}{e.route_id}@{e.position}" for e in entries)  # noqa: E731
    summary = [f"present={rs.present} route_count={rs.route_count} tproxy_port={rs.tproxy_port}"
               f" transparent={list(rs.transparent_services)}",
               f"shadowed: {ids(rs.shadowed)}",
               *(f"rule {i}: {ids(rule.routes)}" for i, rule in enumerate(rs.rules)),
               *(f"set {s.name}: {len(s.elements)} elements" for s in rs.sets)]
    return (f"#### {name}\n" + "\n".join(summary) + "\n---- render_table\n" + render_table(rs)
            + "---- render_script\n" + render_script(rs))


def _golden_sections(text: str) -> dict[str, str]:
    return {chunk.split("\n", 1)[0]: "#### " + chunk for chunk in text.split("#### ")[1:]}


def test_every_action_renders_byte_identical_to_the_golden_file():
    rendered = [_golden_text(name, desired, kw) for name, desired, kw in _golden_cases()]
    if os.environ.get("ARCTIC_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("".join(rendered))
    want, have = _golden_sections(GOLDEN.read_text()), _golden_sections("".join(rendered))
    assert list(have) == list(want)
    for name in want:
        assert have[name] == want[name], name
    assert "".join(rendered) == GOLDEN.read_text()


# --- rules are data, the template writes the syntax ----------------------------------------------------------------

def test_rules_and_sets_are_plain_data_the_template_turns_into_nft_syntax():
    svc = service(A, route(A, 1, "10.1.0.0/16", "192.168.1.0/24"), route(A, 2, "10.2.0.0/16", "192.168.1.0/24"),
                  route(A, 3, None, "fd00::1/128"))
    rs = build_ruleset(DesiredState("peer_a", (svc,), tproxy_port=7000))
    concatenated, plain = rs.rules
    assert rs.sets == (concatenated.lookup,)
    assert (concatenated.lookup.name, concatenated.lookup.family, concatenated.lookup.keys) == (
        "v4_src16_dst24", 4, ("source", "dest"))
    assert [e.prefixes for e in concatenated.lookup.elements] == [
        (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("192.168.1.0/24")),
        (ipaddress.ip_network("10.2.0.0/16"), ipaddress.ip_network("192.168.1.0/24"))]
    assert [(e.route.service_id, e.route.route_id) for e in concatenated.lookup.elements] == [(A, 1), (A, 2)]
    assert (plain.family, plain.source, plain.dest, plain.lookup) == (6, None, ipaddress.ip_network("fd00::1/128"),
                                                                      None)
    assert {(r.verdict, r.port) for r in rs.rules} == {("tproxy", 7000)}


_NFT_WORDS = ("saddr", "daddr", "ipv4_addr", "ipv6_addr", "tproxy ip", "meta ", "tcp flags", "comment", " . ", "@",
              "accept", "0x%", ":08x")


def test_ruleset_py_writes_no_nft_syntax_outside_its_docstrings():
    import ast

    import arctic.netconf.ruleset as module

    tree = ast.parse(Path(module.__file__).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    strings = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    assert strings  # the walk saw the module's literals
    assert [(s, w) for s in strings for w in _NFT_WORDS if w in s] == []


def test_the_template_refuses_a_verdict_or_family_it_does_not_know_instead_of_rendering_half_a_rule():
    import dataclasses

    import jinja2

    rs = build_ruleset(DesiredState("peer_a", (service(A, route(A, 1, None, "192.168.1.0/24")),)))
    for change in ({"verdict": "drop"}, {"family": 5}):
        broken = dataclasses.replace(rs, rules=(dataclasses.replace(rs.rules[0], **change),))
        with pytest.raises(jinja2.UndefinedError):
            render_table(broken)


def test_the_mark_statement_macro_writes_any_mark_and_mask_as_nft_prints_them():
    assert mark_statement(0x1, 0xFF) == "meta mark set meta mark & 0xffffff00 | 0x00000001"
    assert mark_statement(0xAB000000, 0xFF000000) == "meta mark set meta mark & 0x00ffffff | 0xab000000"
    assert build_ruleset(DesiredState("peer_a", ())).mark_statement == MARK
