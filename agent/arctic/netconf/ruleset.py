"""Desired state -> the ``table inet arctic`` text, as one atomic ``nft -f`` transaction.

Rule order is route precedence (``arctic.domain.precedence.ordered``) across all services this peer is the source
of. Linear rules are evaluated one by one for every new connection (measured here: 10,000 single-route rules cut
the TPROXY connection rate to 0.09x of 10 rules), so runs of routes that share a *shape* collapse into one
set lookup:

* A shape is (family, class, destination prefix length, source prefix length) plus the verdict. Precedence sorts
  by class, then destination length, then source length, so routes of one shape are consecutive in the
  precedence order: turning such a run into one ``ip saddr . ip daddr @set`` rule keeps the position of every
  route relative to every route of another shape. Inside a run, all routes have the same verdict (TPROXY to the
  one listener, the same mark), so their order among themselves cannot change any packet's fate. IPv4 and IPv6
  rules never match the same packet, so each family is grouped on its own.
* Two CIDRs of equal length are equal or disjoint, so a run's elements never overlap (nft rejects overlapping
  interval elements). Exact duplicates (the same CIDR pair in two routes) keep the first, i.e. the winner; the
  data plane resolves the owning service with ``precedence.first_match`` on the same order.
* A run of one route stays a plain rule, so small configurations read like the route list itself.

Measured on this machine: 10,000 routes apply in ~0.1 s and the connection rate stays at ~1.0x of 10 routes.
Every rule and element carries a comment starting with ``arctic`` naming the service and route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..domain import precedence
from . import templating
from .constants import (
    FWMARK,
    FWMARK_MASK,
    NFT_CHAIN,
    NFT_CHAIN_PRIORITY,
    NFT_COMMENT_PREFIX,
    NFT_FAMILY,
    NFT_TABLE,
)
from .desired import DesiredState, RouteSpec, route_family, validate

TEMPLATE = "nftables.nft.j2"
SET_THRESHOLD = 2  # runs of at least this many distinct routes become a set lookup

_FAMILY = {4: ("ip", "ipv4_addr", "IPv4"), 6: ("ip6", "ipv6_addr", "IPv6")}
_CLASS_NAMES = {0: "source+destination", 1: "source-only", 2: "destination-only"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addr(net: Network) -> str:
    """How nft prints a prefix: host prefixes (/32, /128) without the length."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


@dataclass(frozen=True)
class RouteEntry:
    """A route resolved for rendering: parsed networks, family and its index in precedence order."""

    service_id: str
    route_id: int
    family: int
    source: Network | None
    dest: Network | None
    position: int

    @property
    def klass(self) -> int:
        return precedence.specificity_class(self.source and str(self.source), self.dest and str(self.dest))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.family, self.klass, self.dest.prefixlen if self.dest else 0,
                self.source.prefixlen if self.source else 0)

    @property
    def comment(self) -> str:
        return f"{NFT_COMMENT_PREFIX} {self.service_id} route {self.route_id}"

    @property
    def key(self) -> tuple[str | None, str | None]:
        return (self.source and str(self.source), self.dest and str(self.dest))


@dataclass(frozen=True)
class SetSpec:
    name: str
    type: str
    elements: tuple[tuple[str, str], ...]  # (element text, comment)


@dataclass(frozen=True)
class RuleSpec:
    match: str
    verdict: str
    comment: str
    routes: tuple[RouteEntry, ...]


@dataclass(frozen=True)
class NftRuleset:
    """Everything ``table inet arctic`` should contain; ``present=False`` means the table should not exist."""

    present: bool
    rules: tuple[RuleSpec, ...] = ()
    sets: tuple[SetSpec, ...] = ()
    tproxy_port: int = 61080
    route_count: int = 0
    shadowed: tuple[RouteEntry, ...] = field(default=())  # exact duplicates of a higher-precedence route
    transparent_services: tuple[str, ...] = ()

    @property
    def mark_statement(self) -> str:
        return mark_statement()


def mark_statement(mark: int = FWMARK, mask: int = FWMARK_MASK) -> str:
    """Set only our byte of the packet mark; the other bits keep whatever other software put there."""
    keep = ~mask & 0xFFFFFFFF
    return f"meta mark set meta mark & 0x{keep:08x} | 0x{mark:08x}"


def resolve_routes(routes: Sequence[RouteSpec]) -> list[RouteEntry]:
    """Routes in precedence order (across services), parsed."""
    out = []
    for i, r in enumerate(precedence.ordered(routes)):
        out.append(RouteEntry(
            service_id=r.service_id, route_id=r.route_id, family=route_family(r),
            source=ipaddress.ip_network(r.source_cidr) if r.source_cidr else None,
            dest=ipaddress.ip_network(r.dest_cidr) if r.dest_cidr else None, position=i))
    return out


def _verdict(family: int, tproxy_port: int) -> str:
    return f"tproxy {_FAMILY[family][0]} to :{tproxy_port} {mark_statement()} accept"


def _single_match(e: RouteEntry) -> str:
    """The addresses a route matches, as ``nft list`` prints them; the template adds the TCP SYN test (which makes
    nft drop an explicit ``meta l4proto tcp`` from its listing, so none is written)."""
    kw = _FAMILY[e.family][0]
    parts = []
    if e.source is not None:
        parts.append(f"{kw} saddr {_addr(e.source)}")
    if e.dest is not None:
        parts.append(f"{kw} daddr {_addr(e.dest)}")
    return " ".join(parts)


def _set_parts(family: int, klass: int) -> tuple[str, str]:
    """(set type, match expression without the set name) for a shape."""
    kw, addr_type, _ = _FAMILY[family]
    if klass == 0:
        return f"{addr_type} . {addr_type}", f"{kw} saddr . {kw} daddr"
    if klass == 1:
        return addr_type, f"{kw} saddr"
    return addr_type, f"{kw} daddr"


def _element(e: RouteEntry) -> str:
    if e.klass == 0:
        return f"{_addr(e.source)} . {_addr(e.dest)}"
    return _addr(e.source if e.klass == 1 else e.dest)


def _set_name(shape: tuple[int, int, int, int], used: set[str]) -> str:
    family, klass, dlen, slen = shape
    base = f"v{family}_" + {0: f"src{slen}_dst{dlen}", 1: f"src{slen}", 2: f"dst{dlen}"}[klass]
    name, n = base, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def _set_comment(shape: tuple[int, int, int, int], count: int) -> str:
    family, klass, dlen, slen = shape
    fam = _FAMILY[family][2]
    what = {0: f"source /{slen} + destination /{dlen}", 1: f"source /{slen}", 2: f"destination /{dlen}"}[klass]
    return f"{NFT_COMMENT_PREFIX} {count} routes: {fam} {what}"


def build_ruleset(desired: DesiredState, *, set_threshold: int = SET_THRESHOLD) -> NftRuleset:
    """The table this peer needs; validates ``desired`` first (``DesiredStateError`` on bad input)."""
    validate(desired)
    entries = resolve_routes(desired.intercepted_routes())
    transparent = tuple(s.id for s in desired.transparent_inbound())
    if not desired.intercepts():
        return NftRuleset(present=False, tproxy_port=desired.tproxy_port)

    # Consecutive runs of one shape and verdict, per family (see the module docstring for why this is exact).
    runs: list[list[RouteEntry]] = []
    open_run: dict[int, tuple[tuple, list[RouteEntry]]] = {}
    for e in entries:
        key = (e.shape, _verdict(e.family, desired.tproxy_port))
        current = open_run.get(e.family)
        if current is not None and current[0] == key:
            current[1].append(e)
        else:
            run: list[RouteEntry] = [e]
            open_run[e.family] = (key, run)
            runs.append(run)

    rules: list[RuleSpec] = []
    sets: list[SetSpec] = []
    shadowed: list[RouteEntry] = []
    used_names: set[str] = set()
    for run in runs:
        unique: dict[tuple, RouteEntry] = {}
        for e in run:
            if e.key in unique:
                shadowed.append(e)
            else:
                unique[e.key] = e
        members = list(unique.values())
        verdict = _verdict(run[0].family, desired.tproxy_port)
        if len(members) < set_threshold:
            rules.extend(RuleSpec(_single_match(e), verdict, e.comment, (e,)) for e in members)
            continue
        shape = run[0].shape
        set_type, match = _set_parts(shape[0], shape[1])
        name = _set_name(shape, used_names)
        sets.append(SetSpec(name, set_type, tuple((_element(e), e.comment) for e in members)))
        rules.append(RuleSpec(f"{match} @{name}", verdict, _set_comment(shape, len(members)), tuple(members)))

    return NftRuleset(present=True, rules=tuple(rules), sets=tuple(sets), tproxy_port=desired.tproxy_port,
                      route_count=len(entries), shadowed=tuple(shadowed), transparent_services=transparent)


def _render(ruleset: NftRuleset, action: str) -> str:
    return templating.render(
        TEMPLATE, action=action, family=NFT_FAMILY, table=NFT_TABLE, chain=NFT_CHAIN,
        chain_priority=NFT_CHAIN_PRIORITY, mark=ruleset.mark_statement, comment_prefix=NFT_COMMENT_PREFIX,
        sets=ruleset.sets, rules=ruleset.rules, route_count=ruleset.route_count,
        transparent_services=ruleset.transparent_services)


def render_table(ruleset: NftRuleset) -> str:
    """The table as it should be listed (no transaction prelude); empty when the table should not exist."""
    return _render(ruleset, "show") if ruleset.present else ""


def render_script(ruleset: NftRuleset) -> str:
    """The ``nft -f`` transaction: replace the table atomically, or delete it when nothing needs it."""
    return _render(ruleset, "replace" if ruleset.present else "delete")
