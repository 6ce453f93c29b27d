"""Policy routing for TPROXY: ``ip rule fwmark MARK/MASK lookup TABLE`` + ``local 0/0 dev lo table TABLE``.

A TPROXY'd packet still carries a foreign destination address; the marked lookup in our table finds a ``local``
route, so the kernel delivers it to the listening socket instead of forwarding it. The same path delivers
replies to Transparent Mode sockets on the target (marked by the ``socket transparent`` nft rule).

We own the routing table ``ROUTE_TABLE`` entirely and every rule that points at it; nothing else is touched.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .constants import FWMARK, FWMARK_MASK, ROUTE_TABLE, RULE_PRIORITY
from .desired import DesiredState, route_family
from .errors import PolicyRoutingError

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_ANY = {4: "0.0.0.0/0", 6: "::/0"}


@dataclass(frozen=True, order=True)
class RuleEntry:
    family: int
    priority: int | None
    fwmark: int | None
    fwmask: int | None
    table: int

    def text(self) -> str:
        mark = "" if self.fwmark is None else f" fwmark {self.fwmark:#x}" + (
            f"/{self.fwmask:#x}" if self.fwmask not in (None, 0xFFFFFFFF) else "")
        prio = "" if self.priority is None else f" priority {self.priority}"
        return f"ip -{self.family} rule add{prio}{mark} lookup {self.table}"


@dataclass(frozen=True, order=True)
class LocalRoute:
    family: int
    dst: str
    dev: str
    table: int
    kind: str = "local"

    def text(self) -> str:
        return f"ip -{self.family} route add {self.kind} {self.dst} dev {self.dev} table {self.table}"


@dataclass(frozen=True)
class PolicySpec:
    """What policy routing this peer needs. ``required`` families must succeed; the others are best effort
    (a host with IPv6 disabled can still run an IPv4-only service)."""

    rules: tuple[RuleEntry, ...] = ()
    routes: tuple[LocalRoute, ...] = ()
    required_families: frozenset[int] = frozenset()

    @property
    def needed(self) -> bool:
        return bool(self.rules)


def policy_spec(desired: DesiredState) -> PolicySpec:
    routes = desired.intercepted_routes()
    transparent = desired.transparent_inbound()
    if not desired.intercepts():
        return PolicySpec()
    required = {route_family(r) for r in routes}
    for svc in transparent:
        required.add(4)  # a transparent service always carries IPv4 client addresses unless proven otherwise
        if svc.desired_ipv6_cidr:
            required.add(6)
    return PolicySpec(
        rules=tuple(RuleEntry(f, RULE_PRIORITY, FWMARK, FWMARK_MASK, ROUTE_TABLE) for f in (4, 6)),
        routes=tuple(LocalRoute(f, _ANY[f], "lo", ROUTE_TABLE) for f in (4, 6)),
        required_families=frozenset(required))


@dataclass(frozen=True)
class PolicyState:
    rules: tuple[RuleEntry, ...]
    routes: tuple[LocalRoute, ...]

    def lines(self) -> list[str]:
        return [r.text() for r in sorted(self.rules)] + [r.text() for r in sorted(self.routes)]


def spec_lines(spec: PolicySpec) -> list[str]:
    return PolicyState(spec.rules, spec.routes).lines()


def _iproute() -> Any:
    from pyroute2 import IPRoute  # imported lazily: unit tests of the renderers need no netlink

    return IPRoute()


class PolicyRouting:
    """Reads and converges the rules and routes of ``ROUTE_TABLE`` over netlink (pyroute2)."""

    def __init__(self, iproute_factory: Callable[[], Any] = _iproute, log: Any = None) -> None:
        self._iproute = iproute_factory
        self._log = log
        self.unavailable_families: set[int] = set()  # families the kernel refused (e.g. IPv6 disabled)

    def read(self) -> PolicyState:
        rules, routes = [], []
        with self._iproute() as ipr:
            names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
            for family, af in _AF.items():
                for msg in _safe(lambda af=af: ipr.get_rules(family=af)):
                    table = msg.get("FRA_TABLE") or msg["table"]
                    if table == ROUTE_TABLE:
                        rules.append(RuleEntry(family, msg.get("FRA_PRIORITY"), msg.get("FRA_FWMARK"),
                                               msg.get("FRA_FWMASK"), table))
                for msg in _safe(lambda af=af: ipr.get_routes(family=af, table=ROUTE_TABLE)):
                    if (msg.get("RTA_TABLE") or msg["table"]) != ROUTE_TABLE:
                        continue
                    dst = msg.get("RTA_DST")
                    kind = {2: "local", 1: "unicast"}.get(msg["type"], f"type{msg['type']}")
                    routes.append(LocalRoute(family, f"{dst}/{msg['dst_len']}" if dst else _ANY[family],
                                             names.get(msg.get("RTA_OIF"), "?"), ROUTE_TABLE, kind))
        return PolicyState(tuple(sorted(set(rules))), tuple(sorted(set(routes))))

    def converge(self, spec: PolicySpec) -> list[str]:
        """Add what is missing, delete what is ours but not wanted; returns the changes (ip(8) syntax)."""
        current = self.read()
        changes: list[str] = []
        with self._iproute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]

            def rule_op(op: str, r: RuleEntry) -> Any:
                return ipr.rule(op, family=_AF[r.family], table=r.table, **_rule_match(r))

            def route_op(op: str, r: LocalRoute) -> Any:
                # Local routes have host scope; a delete must name it too, or the kernel finds no match (ESRCH).
                extra = {"oif": lo} if op == "add" else {}
                return ipr.route(op, family=_AF[r.family], dst=r.dst, type=r.kind, table=r.table,
                                 scope=254 if r.kind == "local" else 0, **extra)

            removals = [(e, rule_op) for e in current.rules if e not in spec.rules]
            removals += [(e, route_op) for e in current.routes if e not in spec.routes]
            additions = [(e, rule_op) for e in spec.rules if e not in current.rules]
            additions += [(e, route_op) for e in spec.routes if e not in current.routes]
            for entry, op in removals:
                text = entry.text().replace(" add", " del", 1)
                if self._call(lambda e=entry, op=op: op("del", e), entry.family, spec, text):
                    changes.append(text)
            for entry, op in additions:
                if self._call(lambda e=entry, op=op: op("add", e), entry.family, spec, entry.text()):
                    changes.append(entry.text())
        return changes

    def remove(self) -> list[str]:
        return self.converge(PolicySpec())

    def _call(self, fn: Callable[[], Any], family: int, spec: PolicySpec, what: str) -> bool:
        deleting = " del " in what
        try:
            fn()
            return True
        except Exception as exc:  # pyroute2 raises NetlinkError; keep the message operator-friendly
            code = getattr(exc, "code", None)
            if code in ((errno.ENOENT, errno.ESRCH) if deleting else (errno.EEXIST,)):
                return False  # someone else converged it meanwhile: the next read shows the truth
            if family == 6 and not deleting and family not in spec.required_families:
                self.unavailable_families.add(family)
                self._warn("IPv6 policy routing unavailable; IPv6 interception disabled on this host",
                           change=what, error=str(exc))
                return False
            raise PolicyRoutingError(f"{what} failed: {exc}") from exc

    def _warn(self, msg: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.warning(msg, **fields)


def _rule_match(rule: RuleEntry) -> dict[str, int]:
    out: dict[str, int] = {}
    if rule.priority is not None:
        out["priority"] = rule.priority
    if rule.fwmark is not None:
        out["fwmark"] = rule.fwmark
    if rule.fwmask is not None:
        out["fwmask"] = rule.fwmask
    return out


def _safe(fn: Callable[[], Any]) -> list[Any]:
    """Dumps of a disabled family (e.g. IPv6 off) fail with EAFNOSUPPORT: treat as empty."""
    try:
        return list(fn())
    except Exception as exc:
        if getattr(exc, "code", None) in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            return []
        raise
