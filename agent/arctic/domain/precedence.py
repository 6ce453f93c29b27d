"""Route precedence: which route (of any service on a peer) owns a new connection.

DESIGN.md "Route precedence": most specific first, then higher priority. Specificity classes:
both CIDRs > source-only > destination-only; within a class the longer destination prefix wins,
then the longer source prefix; then higher ``priority``; then the older route. The API lists
routes in this order and the reconciler writes kernel rules in exactly this order, so both use
``precedence_key``; ``first_match`` is the same decision made in user space (data plane).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Protocol


class RouteLike(Protocol):
    source_cidr: str | None
    dest_cidr: str | None
    priority: int
    seq: int  # global creation order: smaller = older


def specificity_class(source_cidr: str | None, dest_cidr: str | None) -> int:
    """0 = source and destination, 1 = source-only, 2 = destination-only."""
    if source_cidr and dest_cidr:
        return 0
    return 1 if source_cidr else 2


def _prefixlen(cidr: str | None) -> int:
    return ipaddress.ip_network(cidr).prefixlen if cidr else 0


def precedence_key(route: RouteLike) -> tuple:
    """Sort key: ascending order = most preferred first."""
    return (
        specificity_class(route.source_cidr, route.dest_cidr),
        -_prefixlen(route.dest_cidr),
        -_prefixlen(route.source_cidr),
        -int(route.priority),
        int(route.seq),
    )


def ordered(routes: Iterable[RouteLike]) -> list:
    return sorted(routes, key=precedence_key)


def _same_match(cidr: str | None) -> str | None:
    return str(ipaddress.ip_network(cidr)) if cidr else None


def with_winners(routes: Iterable[RouteLike]) -> list[tuple]:
    """``(route, winner)`` in precedence order; ``winner`` is the earlier route with exactly the same match, or None.

    A route with a winner is shadowed: the kernel keeps only the first rule of an exact duplicate
    (``netconf.ruleset``) and the data plane's ``first_match`` never picks it, so it carries nothing.
    """
    seen: dict[tuple, RouteLike] = {}
    out = []
    for route in ordered(routes):
        winner = seen.setdefault((_same_match(route.source_cidr), _same_match(route.dest_cidr)), route)
        out.append((route, None if winner is route else winner))
    return out


def matches(route: RouteLike, src: str, dst: str) -> bool:
    """Does a connection from ``src`` to ``dst`` fall under ``route``? (address families must agree)"""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    for cidr, addr in ((route.source_cidr, s), (route.dest_cidr, d)):
        if cidr:
            net = ipaddress.ip_network(cidr)
            if net.version != addr.version or addr not in net:
                return False
    return True


def first_match(ordered_routes: Sequence[RouteLike], src: str, dst: str):
    """The winning route for a connection, given routes already in precedence order; None if none."""
    for route in ordered_routes:
        if matches(route, src, dst):
            return route
    return None


class RouteIndex:
    """``first_match`` in O(prefix-length groups) instead of O(routes), with the same answer.

    In precedence order, routes with the same (class, destination length, source length) are
    consecutive, and within such a group a connection can only match routes whose networks equal
    its addresses masked to those lengths, so each group is one dict lookup. Built once per
    config; the data plane asks it for every new connection (10,000 routes must not slow that).
    """

    def __init__(self, ordered_routes: Sequence[RouteLike]):
        self._groups: list[tuple[tuple, dict]] = []
        for route in ordered_routes:
            src = ipaddress.ip_network(route.source_cidr) if route.source_cidr else None
            dst = ipaddress.ip_network(route.dest_cidr) if route.dest_cidr else None
            shape = (specificity_class(route.source_cidr, route.dest_cidr),
                     dst.prefixlen if dst else None, src.prefixlen if src else None)
            if not self._groups or self._groups[-1][0] != shape:
                self._groups.append((shape, {}))
            key = (src.version if src else None, int(src.network_address) if src else None,
                   dst.version if dst else None, int(dst.network_address) if dst else None)
            self._groups[-1][1].setdefault(key, route)

    def first_match(self, src: str, dst: str):
        """The winning route for ``src`` -> ``dst`` (address text, as sockets report it)."""
        sv, si = _address(src)
        dv, di = _address(dst)
        for (_, dlen, slen), table in self._groups:
            key = (*_masked(sv, si, slen), *_masked(dv, di, dlen))
            route = table.get(key)
            if route is not None:
                return route
        return None


def _address(text: str) -> tuple[int, int]:
    """(version, integer) of an address; ``inet_pton`` because the data plane asks for every new connection and
    ``ipaddress.ip_address`` costs several times more."""
    try:
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _masked(version: int, value: int, plen: int | None) -> tuple[int | None, int | None]:
    if plen is None:
        return None, None
    bits = 32 if version == 4 else 128
    if plen > bits:
        return version, -1  # a /64 can never hold an IPv4 address
    shift = bits - plen
    return version, (value >> shift) << shift if plen else 0
