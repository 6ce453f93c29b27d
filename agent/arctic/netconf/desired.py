"""The input of the kernel-state layer: what this peer should look like, as plain frozen dataclasses.

The lead's code builds a ``DesiredState`` from the store (services and routes that involve this peer); this
package turns it into nft text, policy routing and service interfaces. Nothing here touches the kernel.
``validate`` refuses anything that would render into broken or unsafe kernel state, before anything changes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..domain.cidr import CidrError, parse_interface, parse_network
from .constants import DEFAULT_TPROXY_PORT, DEFAULT_TUNNEL_PORT
from .errors import DesiredStateError

# Service ids end up inside nft comments and link aliases: allow only characters that need no quoting.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")


@dataclass(frozen=True)
class RouteSpec:
    """One route of a service; ``seq`` is the global creation order (smaller = older) used for precedence ties."""

    service_id: str
    route_id: int
    source_cidr: str | None
    dest_cidr: str | None
    priority: int
    seq: int


@dataclass(frozen=True)
class ServiceSpec:
    id: str
    source_peer_id: str
    target_peer_id: str
    transport_type: str
    requires_interface: bool
    desired_ipv4_cidr: str | None
    desired_ipv6_cidr: str | None
    fully_transparent: bool
    bandwidth_limit_mbps: int
    routes: tuple[RouteSpec, ...]


@dataclass(frozen=True)
class DesiredState:
    local_peer_id: str
    services: tuple[ServiceSpec, ...]
    tproxy_port: int = DEFAULT_TPROXY_PORT
    tunnel_port: int = DEFAULT_TUNNEL_PORT
    lan_interface: str | None = None
    # The data plane carries connections now: the socket rule and the policy routing their packets follow stay,
    # even once no route diverts anything (a deleted last route or service never cuts a live connection).
    proxied_connections: bool = False

    # --- views used by the renderers ----------------------------------------------------------------------------

    def outbound_services(self) -> tuple[ServiceSpec, ...]:
        """Services whose traffic this peer intercepts (it is their source)."""
        return tuple(s for s in self.services if s.source_peer_id == self.local_peer_id)

    def inbound_services(self) -> tuple[ServiceSpec, ...]:
        """Services this peer re-originates (it is their target)."""
        return tuple(s for s in self.services if s.target_peer_id == self.local_peer_id)

    def interface_services(self) -> tuple[ServiceSpec, ...]:
        """Services that get a MACVLAN here: the target side of ``requires_interface`` services."""
        return tuple(s for s in self.inbound_services() if s.requires_interface)

    def transparent_inbound(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.inbound_services() if s.fully_transparent)

    def intercepted_routes(self) -> tuple[RouteSpec, ...]:
        return tuple(r for s in self.outbound_services() for r in s.routes)

    def intercepts(self) -> bool:
        """Anything for the nft table and policy routing: routes to divert, Transparent Mode replies to deliver
        locally, or live connections whose packets follow their sockets."""
        return bool(self.intercepted_routes() or self.transparent_inbound() or self.proxied_connections)


def route_family(route: RouteSpec) -> int:
    """4 or 6: the family of the route's CIDR(s). Call ``validate`` first (it refuses mixed families)."""
    cidr = route.source_cidr or route.dest_cidr
    if not cidr:
        raise DesiredStateError(f"{route.service_id} route {route.route_id} has neither source nor destination CIDR")
    return ipaddress.ip_network(cidr).version


def empty(local_peer_id: str = "peer_local", **kwargs) -> DesiredState:
    """A desired state with no services: applying it removes everything Arctic owns."""
    return DesiredState(local_peer_id=local_peer_id, services=(), **kwargs)


def validate(desired: DesiredState) -> None:
    """Raise ``DesiredStateError`` naming the first problem; return None when everything can be rendered."""
    for port_name in ("tproxy_port", "tunnel_port"):
        port = getattr(desired, port_name)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise DesiredStateError(f"{port_name} {port!r} must be a TCP port number between 1 and 65535")
    if desired.lan_interface is not None and not _IFNAME.match(desired.lan_interface):
        raise DesiredStateError(
            f"lan_interface {desired.lan_interface!r} is not a valid interface name (1-15 of A-Z a-z 0-9 . _ -)")
    seen: set[str] = set()
    for svc in desired.services:
        if not _SAFE_ID.match(svc.id or ""):
            raise DesiredStateError(f"service id {svc.id!r} may only contain letters, digits, '_' and '-'")
        if svc.id in seen:
            raise DesiredStateError(f"service {svc.id} appears twice in the desired state")
        seen.add(svc.id)
        if svc.fully_transparent and not svc.requires_interface:
            raise DesiredStateError(f"service {svc.id}: fully_transparent requires requires_interface")
        for field, version in (("desired_ipv4_cidr", 4), ("desired_ipv6_cidr", 6)):
            value = getattr(svc, field)
            if value is not None:
                try:
                    parse_interface(value, f"service {svc.id} {field}", version)
                except CidrError as exc:
                    raise DesiredStateError(str(exc)) from None
        for route in svc.routes:
            _validate_route(svc, route)


def _validate_route(svc: ServiceSpec, route: RouteSpec) -> None:
    where = f"service {svc.id} route {route.route_id}"
    if route.service_id != svc.id:
        raise DesiredStateError(f"{where} says it belongs to {route.service_id!r}")
    if not route.source_cidr and not route.dest_cidr:
        raise DesiredStateError(f"{where} needs a source_cidr, a dest_cidr or both")
    versions = set()
    for field in ("source_cidr", "dest_cidr"):
        value = getattr(route, field)
        if value:
            try:
                versions.add(parse_network(value, f"{where} {field}").version)
            except CidrError as exc:
                raise DesiredStateError(str(exc)) from None
    if len(versions) > 1:
        raise DesiredStateError(
            f"{where} mixes IPv4 and IPv6 ({route.source_cidr} -> {route.dest_cidr}); use one family per route")
    for field in ("route_id", "priority", "seq"):
        if not isinstance(getattr(route, field), int):
            raise DesiredStateError(f"{where} {field} must be an integer")
