"""RouteIndex gives exactly the answer of the linear precedence scan, for any routes and connection."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from arctic.domain import precedence
from hypothesis import given, settings
from hypothesis import strategies as st


@dataclass(frozen=True)
class R:
    source_cidr: str | None
    dest_cidr: str | None
    priority: int
    seq: int


def _net(version: int):
    bits = 32 if version == 4 else 128
    base = "10.0.0.0" if version == 4 else "fd00::"
    return st.builds(lambda plen, host: str(ipaddress.ip_network(
        (int(ipaddress.ip_address(base)) + host, plen), strict=False)),
        st.sampled_from([0, 8, 16, 24, bits]), st.integers(0, 2 ** 12))


@st.composite
def routes(draw):
    out = []
    for seq in range(draw(st.integers(0, 40))):
        version = draw(st.sampled_from([4, 4, 6]))
        kind = draw(st.sampled_from(["both", "src", "dst"]))
        src = draw(_net(version)) if kind in ("both", "src") else None
        dst = draw(_net(version)) if kind in ("both", "dst") else None
        out.append(R(src, dst, draw(st.integers(0, 3)), seq))
    return out


addresses = st.one_of(
    st.integers(0, 2 ** 12).map(lambda h: str(ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.0")) + h))),
    st.integers(0, 2 ** 12).map(lambda h: str(ipaddress.ip_address(int(ipaddress.ip_address("fd00::")) + h))),
)


@settings(max_examples=300, deadline=None)
@given(routes(), addresses, addresses)
def test_index_agrees_with_linear_first_match(rs, src, dst):
    ordered = precedence.ordered(rs)
    assert precedence.RouteIndex(ordered).first_match(src, dst) is precedence.first_match(ordered, src, dst)


def test_seed_precedence_table_through_the_index():
    rs = [R("10.0.0.0/8", "192.168.0.0/16", 100, 1), R("10.0.0.0/8", "192.168.100.0/24", 100, 2),
          R("10.1.0.0/16", "192.168.100.0/24", 200, 3)]
    index = precedence.RouteIndex(precedence.ordered(rs))
    assert index.first_match("10.1.0.50", "192.168.100.2") is rs[2]
    assert index.first_match("10.2.0.50", "192.168.100.2") is rs[1]
    assert index.first_match("10.2.0.50", "192.168.7.2") is rs[0]
    assert index.first_match("172.16.0.1", "192.168.100.2") is None
