"""Route precedence: which route (of any service on a peer) owns a new connection.

DESIGN.md "Route precedence": most specific first, then higher priority. Specificity classes:
both CIDRs > source-only > destination-only; within a class the longer destination prefix wins,
then the longer source prefix; then higher ``priority``; then the older route. The API lists
routes in this order and the reconciler writes kernel rules in exactly this order, so both use
``precedence_key``; ``first_match`` is the same decision made in user space (data plane).
"""

from __future__ import annotations

import ipaddress
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
