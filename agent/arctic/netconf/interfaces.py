"""Service interfaces: one MACVLAN (mode bridge) per ``requires_interface`` service, on its TARGET peer.

Parent interface (DESIGN.md "Service interface"): the agent config's ``lan_interface``; else the interface that
routes ``desired_ipv4_cidr`` (or ``desired_ipv6_cidr``); else the default-route interface. Name and MAC derive
from the service id (``naming``), the link alias ``arctic <service id>`` marks it as ours: only links of kind
macvlan with that alias are ever changed or deleted.

Address: ``desired_ipv4_cidr`` / ``desired_ipv6_cidr`` as static addresses; without an IPv4 CIDR a DHCP client is
run for the link (``dhcp.DhcpSupervisor``). Creation is all-or-nothing: if any step fails the new link is
deleted again and ``InterfaceError`` says what to fix.

Address conflicts: just before a static address is added (never for one the link already holds, so a steady state
sends nothing on the LAN) it is checked: not on another interface of this host, no answer to an ARP probe (IPv4,
``probe.ArpProbe``), the kernel's duplicate address detection passes (IPv6, switched on for our link whatever the
host default). An address in use is not assigned (a failed IPv6 one is removed again) and ``AddressConflict`` says
who holds it; the MACVLAN stays up without it (see ``AddressConflict``) and the conflict is remembered
(``conflicts``) so the status and a dry run show it until a later run, which probes again, assigns it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .constants import IFALIAS_PREFIX, MACVLAN_MODE
from .desired import DesiredState
from .dhcp import DhcpSupervisor
from .errors import AddressConflict, InterfaceError
from .naming import interface_mac, interface_name
from .probe import IFA_F_DADFAILED, ArpProbe, ProbeError, wait_for_dad
from .sysctl import Sysctls

IFA_F_PERMANENT = 0x80
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True)
class InterfaceSpec:
    service_id: str
    name: str
    mac: str
    ipv4: str | None
    ipv6: str | None
    parent: str | None = None  # resolved against the kernel by InterfaceManager.resolve_parent

    @property
    def dhcp4(self) -> bool:
        return self.ipv4 is None

    def static_addresses(self) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_interface(a)) for a in (self.ipv4, self.ipv6) if a)


def interface_specs(desired: DesiredState) -> list[InterfaceSpec]:
    return [InterfaceSpec(s.id, interface_name(s.id), interface_mac(s.id), s.desired_ipv4_cidr, s.desired_ipv6_cidr)
            for s in sorted(desired.interface_services(), key=lambda s: s.id)]


@dataclass(frozen=True)
class InterfaceStatus:
    """What the API reports for a service interface (``interface_name``, ``interface_mac``, ...)."""

    service_id: str
    name: str
    parent: str | None
    mac: str | None
    ipv4_cidr: str | None
    ipv6_cidr: str | None
    state: str  # up | down | missing | error
    dhcp: bool
    dhcp_running: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ObservedAddress:
    cidr: str
    family: int
    permanent: bool
    link_local: bool
    dadfailed: bool = False  # IPv6 duplicate address detection failed: another host holds it, unusable here


@dataclass(frozen=True)
class ObservedInterface:
    name: str
    index: int
    service_id: str
    parent: str | None
    mac: str | None
    up: bool
    addresses: tuple[ObservedAddress, ...]

    def static(self) -> set[str]:
        return {a.cidr for a in self.addresses if a.permanent and not a.link_local and not a.dadfailed}

    def dadfailed(self) -> set[str]:
        """Addresses the kernel found in use elsewhere: unusable, removed before they are probed again."""
        return {a.cidr for a in self.addresses if a.dadfailed and not a.link_local}

    def dynamic(self) -> set[str]:
        return {a.cidr for a in self.addresses if not a.permanent and not a.link_local}


def _iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def _kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


class InterfaceManager:
    def __init__(self, dhcp: DhcpSupervisor, *, iproute_factory: Callable[[], Any] = _iproute,
                 arp: ArpProbe | None = None, sysctls: Sysctls | None = None) -> None:
        self.dhcp = dhcp
        self._iproute = iproute_factory
        self.arp = arp or ArpProbe()
        self.sysctls = sysctls or Sysctls()
        # service id -> why its address was not assigned at the last attempt (kept for status and dry runs,
        # which must not probe: that would put traffic on the LAN for a read)
        self.conflicts: dict[str, str] = {}
        self.retryable: set[str] = set()  # services whose last converge failed on a netlink call (temporary)

    # --- reading ------------------------------------------------------------------------------------------------

    def observe(self) -> dict[str, ObservedInterface]:
        """Our links (kind macvlan, alias ``arctic <service id>``) as the kernel has them now."""
        out: dict[str, ObservedInterface] = {}
        with self._iproute() as ipr:
            links = list(ipr.get_links())
            names = {link["index"]: link.get("IFLA_IFNAME") for link in links}
            for link in links:
                alias = link.get("IFLA_IFALIAS") or ""
                if _kind(link) != "macvlan" or not alias.startswith(IFALIAS_PREFIX):
                    continue
                addrs = []
                for msg in ipr.get_addr(index=link["index"]):
                    ip = ipaddress.ip_interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
                    flags = msg.get("IFA_FLAGS") or msg["flags"]
                    addrs.append(ObservedAddress(str(ip), ip.version, bool(flags & IFA_F_PERMANENT),
                                                 ip.ip.is_link_local, bool(flags & IFA_F_DADFAILED)))
                name = link.get("IFLA_IFNAME")
                out[name] = ObservedInterface(
                    name=name, index=link["index"], service_id=alias[len(IFALIAS_PREFIX):].strip(),
                    parent=names.get(link.get("IFLA_LINK")), mac=(link.get("IFLA_ADDRESS") or "").lower() or None,
                    up=bool(link["flags"] & 1), addresses=tuple(addrs))
        return out

    def resolve_parent(self, spec: InterfaceSpec, lan_interface: str | None) -> str:
        """The parent interface for ``spec`` (see module docstring), or ``InterfaceError`` naming the problem."""
        with self._iproute() as ipr:
            links = list(ipr.get_links())
            by_index = {link["index"]: link for link in links}
            by_name = {link.get("IFLA_IFNAME"): link for link in links}
            ours = {link["index"] for link in links if _kind(link) == "macvlan"
                    and (link.get("IFLA_IFALIAS") or "").startswith(IFALIAS_PREFIX)}
            if lan_interface:
                link = by_name.get(lan_interface)
                if link is None:
                    raise InterfaceError(
                        f"service {spec.service_id}: parent interface {lan_interface!r} (agent config lan_interface)"
                        " does not exist on this host; set lan_interface to the interface of the destination"
                        " network", service_id=spec.service_id, temporary=False)
                if link["index"] in ours or lan_interface == "lo":
                    raise InterfaceError(f"service {spec.service_id}: lan_interface {lan_interface!r} cannot be a"
                                         " parent for a MACVLAN (loopback or an Arctic service interface)",
                                         service_id=spec.service_id, temporary=False)
                return lan_interface
            tried = []
            for cidr in (spec.ipv4, spec.ipv6):
                if not cidr:
                    continue
                net = ipaddress.ip_interface(cidr).network
                tried.append(str(net))
                oif = self._best_route_oif(ipr, net, ours, by_index)
                if oif is not None:
                    return by_index[oif].get("IFLA_IFNAME")
            for family in (4, 6):
                oif = self._best_route_oif(ipr, ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0"),
                                           ours, by_index)
                if oif is not None:
                    return by_index[oif].get("IFLA_IFNAME")
        reason = f"no route covers {', '.join(tried)} and " if tried else ""
        raise InterfaceError(
            f"service {spec.service_id}: no parent interface for its MACVLAN: {reason}there is no default route;"
            " set lan_interface in the agent config to the interface of the destination network",
            service_id=spec.service_id, temporary=False)

    @staticmethod
    def _best_route_oif(ipr: Any, net: Any, ours: set[int], by_index: dict[int, Any]) -> int | None:
        """Longest-prefix (then lowest-metric) main-table route containing ``net``, skipping lo and our links."""
        best: tuple[int, int, int] | None = None
        try:
            routes = ipr.get_routes(family=_AF[net.version], table=254)
        except Exception:
            return None
        for msg in routes:
            if msg["type"] != 1:  # unicast only
                continue
            dst = msg.get("RTA_DST")
            route_net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}" if dst else
                                             ("0.0.0.0/0" if net.version == 4 else "::/0"))
            if not net.subnet_of(route_net):
                continue
            oif = msg.get("RTA_OIF")
            if oif is None and msg.get("RTA_MULTIPATH"):
                oif = msg.get("RTA_MULTIPATH")[0]["oif"]
            link = by_index.get(oif)
            if oif is None or oif in ours or link is None or link.get("IFLA_IFNAME") == "lo":
                continue
            candidate = (msg["dst_len"], -(msg.get("RTA_PRIORITY") or 0), oif)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        return best[2] if best else None

    # --- converging ---------------------------------------------------------------------------------------------

    def ensure(self, spec: InterfaceSpec) -> list[str]:
        """Make the kernel hold ``spec`` (parent must be resolved). Returns the changes made.

        Raises ``AddressConflict`` (after the rest of the spec, DHCP included, was converged) when a static address
        is in use elsewhere, ``InterfaceError`` for anything else.
        """
        if not spec.parent:
            raise InterfaceError(f"service {spec.service_id}: no parent interface resolved", service_id=spec.service_id)
        changes: list[str] = []
        observed = self.observe().get(spec.name)
        if observed is not None and (observed.parent != spec.parent or observed.mac != spec.mac
                                     or observed.service_id != spec.service_id):
            changes += self.remove(spec.name)
            observed = None
        made, conflicts = self._create(spec) if observed is None else self._fix(spec, observed)
        changes += made
        if spec.dhcp4 and not self.dhcp.running(spec.name):
            self.dhcp.start(spec.name)
            changes.append(f"dhcp client started on {spec.name}")
        if not spec.dhcp4 and self.dhcp.running(spec.name):
            self.dhcp.stop(spec.name)
            changes.append(f"dhcp client stopped on {spec.name}")
        self._settle_conflicts(spec, conflicts, changes)
        return changes

    def _settle_conflicts(self, spec: InterfaceSpec, conflicts: list[str], changes: list[str]) -> None:
        """Remember (and raise) the addresses found in use, or forget an earlier conflict now resolved."""
        if not conflicts:
            self.conflicts.pop(spec.service_id, None)
            return
        message = (f"service {spec.service_id}: address conflict on {spec.name} (parent {spec.parent!r}): "
                   f"{'; '.join(conflicts)}. Not assigned; free the address there or give the service another one;"
                   " it is probed again on every reconcile run")
        self.conflicts[spec.service_id] = message
        raise AddressConflict(message, service_id=spec.service_id, changes=changes)

    def _create(self, spec: InterfaceSpec) -> tuple[list[str], list[str]]:
        """New link, up, then its addresses (probed first, so the link must be up). Returns (changes, conflicts)."""
        with self._iproute() as ipr:
            existing = ipr.link_lookup(ifname=spec.name)
            if existing:
                raise InterfaceError(
                    f"service {spec.service_id}: an interface named {spec.name} already exists and is not an Arctic"
                    " service interface; rename or remove it", service_id=spec.service_id, temporary=False)
            parent = ipr.link_lookup(ifname=spec.parent)
            if not parent:
                raise InterfaceError(f"service {spec.service_id}: parent interface {spec.parent!r} does not exist",
                                     service_id=spec.service_id, temporary=False)
            try:
                ipr.link("add", ifname=spec.name, kind="macvlan", link=parent[0], macvlan_mode=MACVLAN_MODE,
                         address=spec.mac)
            except Exception as exc:
                raise InterfaceError(
                    f"service {spec.service_id}: cannot create MACVLAN {spec.name} on parent interface"
                    f" {spec.parent!r}: {_reason(exc)}; check that {spec.parent!r} is an Ethernet-like interface"
                    " (not loopback or a tunnel) and that the agent runs as root", service_id=spec.service_id,
                ) from exc
            changes = [f"ip link add {spec.name} link {spec.parent} address {spec.mac}"
                       f" type macvlan mode {MACVLAN_MODE}"]
            try:
                index = ipr.link_lookup(ifname=spec.name)[0]
                ipr.link("set", index=index, ifalias=f"{IFALIAS_PREFIX}{spec.service_id}")
                ipr.link("set", index=index, state="up")
                changes.append(f"ip link set {spec.name} up")
                added, conflicts = self._add_addresses(ipr, spec, index, spec.static_addresses())
            except BaseException as exc:
                self._delete_link(ipr, spec.name)
                if isinstance(exc, InterfaceError):
                    raise
                raise InterfaceError(f"service {spec.service_id}: cannot configure MACVLAN {spec.name} on"
                                     f" {spec.parent!r}: {_reason(exc)}", service_id=spec.service_id) from exc
        return changes + added, conflicts

    def _fix(self, spec: InterfaceSpec, observed: ObservedInterface) -> tuple[list[str], list[str]]:
        """Drop addresses not wanted (and failed ones), bring the link up, add what is missing (probed first)."""
        changes: list[str] = []
        wanted = set(spec.static_addresses())
        with self._iproute() as ipr:
            for cidr in sorted((observed.static() - wanted) | observed.dadfailed()):
                self._delete_address(ipr, observed.index, cidr)
                changes.append(f"ip addr del {cidr} dev {spec.name}")
            if not spec.dhcp4:
                for cidr in sorted(a for a in observed.dynamic() if ipaddress.ip_interface(a).version == 4):
                    self._delete_address(ipr, observed.index, cidr)
                    changes.append(f"ip addr del {cidr} dev {spec.name}")
            if not observed.up:
                ipr.link("set", index=observed.index, state="up")
                changes.append(f"ip link set {spec.name} up")
            added, conflicts = self._add_addresses(ipr, spec, observed.index, sorted(wanted - observed.static()))
        return changes + added, conflicts

    def _add_addresses(self, ipr: Any, spec: InterfaceSpec, index: int,
                       cidrs: Iterable[str]) -> tuple[list[str], list[str]]:
        """Add each address nobody else uses. Returns (changes, one line per address found in use)."""
        changes, conflicts = [], []
        for cidr in cidrs:
            conflict = self._add_address(ipr, spec, index, ipaddress.ip_interface(cidr))
            if conflict is None:
                changes.append(f"ip addr add {cidr} dev {spec.name}")
            else:
                conflicts.append(conflict)
        return changes, conflicts

    def _add_address(self, ipr: Any, spec: InterfaceSpec, index: int, iface: Any) -> str | None:
        """Probe, then add ``iface``. Returns why it was not added (in use elsewhere); None once the link holds it."""
        field = f"desired_ipv{iface.version}_cidr {iface.with_prefixlen}"
        local = _local_holder(ipr, iface.ip, index)
        if local is not None:
            return f"{field} is already an address of {local} on this host"
        if iface.version == 4:
            holder = self._arp_holder(spec, str(iface.ip))
            if holder is not None:
                return f"{field} is already used on the LAN by the host with MAC {holder} (it answered an ARP probe)"
        else:
            self._enable_dad(spec.name)
        try:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except Exception as exc:
            raise InterfaceError(f"service {spec.service_id}: cannot add address {iface.with_prefixlen} to"
                                 f" {spec.name} (parent {spec.parent!r}): {_reason(exc)}",
                                 service_id=spec.service_id) from exc
        if iface.version == 6 and wait_for_dad(lambda: _address_flags(ipr, index, iface)) == "duplicate":
            self._delete_address(ipr, index, iface.with_prefixlen)
            return f"{field} is already used on the LAN (IPv6 duplicate address detection failed)"
        return None

    def _arp_holder(self, spec: InterfaceSpec, address: str) -> str | None:
        try:
            return self.arp.holder(spec.name, spec.mac, address)
        except ProbeError as exc:
            raise InterfaceError(f"service {spec.service_id}: cannot check whether {address} is free on the LAN:"
                                 f" {exc.strerror or exc}; the agent needs CAP_NET_RAW", service_id=spec.service_id,
                                 ) from exc

    def _enable_dad(self, name: str) -> None:
        """Duplicate address detection on for our link (effective when the link's or ``all``'s value is >= 1), so
        a host with ``default.accept_dad=0`` still finds an IPv6 conflict before the address is used."""
        with contextlib.suppress(OSError):  # no IPv6 on this link: adding the address fails next, saying why
            self.sysctls.write(f"net.ipv6.conf.{name}.accept_dad", "1")

    @staticmethod
    def _delete_address(ipr: Any, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def remove(self, name: str) -> list[str]:
        """Stop its DHCP client and delete the link (only if it is ours)."""
        changes = []
        if self.dhcp.stop(name):
            changes.append(f"dhcp client stopped on {name}")
        if name in self.observe():
            with self._iproute() as ipr:
                self._delete_link(ipr, name)
            changes.append(f"ip link del {name}")
        return changes

    def converge(self, specs: Iterable[InterfaceSpec], keep: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
        """Ensure every spec, remove our links no spec wants. Returns (changes, errors by service id).

        ``keep``: names of links to leave alone although no spec is given for them (their service is still
        wanted but its parent could not be resolved right now: a config typo must not tear down a working link).
        """
        specs = list(specs)
        changes: list[str] = []
        errors: dict[str, str] = {}
        wanted = {s.name for s in specs} | set(keep)
        for name in sorted(set(self.observe()) - wanted):
            changes += self.remove(name)
        for pidfile in sorted(self.dhcp.run_dir.glob("*.pid.json")):  # clients whose link is already gone
            ifname = pidfile.name.removesuffix(".pid.json")
            if ifname not in wanted and self.dhcp.stop(ifname):
                changes.append(f"dhcp client stopped on {ifname}")
        for sid in set(self.conflicts) - {s.service_id for s in specs}:
            del self.conflicts[sid]  # service gone (or its link kept aside): nothing is being assigned
        self.retryable = set()
        for spec in specs:
            try:
                changes += self.ensure(spec)
            except InterfaceError as exc:
                errors[spec.service_id] = str(exc)
                changes += getattr(exc, "changes", [])
                if exc.temporary:  # a netlink call failed this time: the worker tries again soon
                    self.retryable.add(spec.service_id)
        return changes, errors

    def status(self, spec: InterfaceSpec, error: str | None = None,
               observed: dict[str, ObservedInterface] | None = None) -> InterfaceStatus:
        """``state`` is ``error`` when the link is missing for a reason, or when its address is in use elsewhere
        (the link is there but cannot carry the service at its address)."""
        obs = (self.observe() if observed is None else observed).get(spec.name)
        conflict = self.conflicts.get(spec.service_id)
        error = error or conflict
        if obs is None:
            return InterfaceStatus(spec.service_id, spec.name, spec.parent, None, None, None,
                                   "error" if error else "missing", spec.dhcp4, False, error)
        usable = [a for a in obs.addresses if not a.link_local and not a.dadfailed]
        v4 = [a for a in usable if a.family == 4]
        v6 = [a for a in usable if a.family == 6]
        return InterfaceStatus(
            spec.service_id, obs.name, obs.parent, obs.mac, v4[0].cidr if v4 else None, v6[0].cidr if v6 else None,
            "error" if conflict else "up" if obs.up else "down", spec.dhcp4, self.dhcp.running(obs.name), error)

    # --- helpers ------------------------------------------------------------------------------------------------

    def _delete_link(self, ipr: Any, name: str) -> None:
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except Exception as exc:
                if getattr(exc, "code", None) != 19:  # ENODEV: already gone
                    raise


def _local_holder(ipr: Any, ip: Any, own_index: int) -> str | None:
    """The name of another interface of this host holding ``ip``: an ARP probe cannot see it (a MACVLAN in bridge
    mode does not talk to its parent), and two interfaces with one address confuse the host's own routing."""
    for msg in ipr.get_addr(family=_AF[ip.version]):
        if msg["index"] != own_index and ipaddress.ip_address(msg.get("IFA_ADDRESS")) == ip:
            links = ipr.get_links(msg["index"])
            return links[0].get("IFLA_IFNAME") if links else f"interface {msg['index']}"
    return None


def _address_flags(ipr: Any, index: int, iface: Any) -> int | None:
    """Flags of one address of link ``index`` (``IFA_FLAGS`` carries the 32-bit set), None if it is gone."""
    for msg in ipr.get_addr(family=_AF[iface.version], index=index):
        if ipaddress.ip_address(msg.get("IFA_ADDRESS")) == iface.ip:
            return msg.get("IFA_FLAGS") or msg["flags"]
    return None


def _reason(exc: BaseException) -> str:
    """pyroute2's NetlinkError is ``(code, text)``; show the text an operator can search for."""
    args = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[0], int):
        return f"{args[1]} (errno {args[0]})"
    return str(exc) or type(exc).__name__
