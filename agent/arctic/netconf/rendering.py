"""What THIS peer should look like, computed from the store: the netconf ``DesiredState`` and the data-plane config.

Pure functions over store records (no kernel, no files), shared by the reconcile worker (which applies them) and
``POST /v1/plan`` (which renders them for a copy of the store with proposed changes). Keeping one derivation for
both is what makes a dry run show the change the real write will make.

A service involves this peer when it is the service's source (it intercepts) or target (it re-originates). It is
only *active* here while both of its peers are members of the cluster (not revoked or deactivated) and the
licence lets the data plane run; otherwise it is left out and its kernel state is removed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arctic.config import AgentConfig
from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec
from arctic.netconf.qos import ServiceLink
from arctic.store import repository as repo
from arctic.store.records import Peer, Service

DATAPLANE_CONFIG = "dataplane.json"
STATS_FILE = "dataplane.stats.json"


@dataclass(frozen=True)
class LocalView:
    """The records that matter to one peer: its id, every peer (for keys and addresses) and its active services."""

    local_peer_id: str
    peers: Mapping[str, Peer]
    services: tuple[Service, ...]

    def other_peer(self, service: Service) -> Peer:
        other = service.target_peer_id if service.source_peer_id == self.local_peer_id else service.source_peer_id
        return self.peers[other]


def build_view(local_peer_id: str, peers: Iterable[Peer], services: Iterable[Service], *,
               enabled: bool = True) -> LocalView:
    """Select the services that involve ``local_peer_id`` and whose two peers are active (none if not ``enabled``)."""
    by_id = {p.id: p for p in peers}

    def active(peer_id: str) -> bool:
        peer = by_id.get(peer_id)
        return peer is not None and peer.is_member

    chosen = tuple(sorted(
        (s for s in services
         if local_peer_id in (s.source_peer_id, s.target_peer_id) and s.source_peer_id != s.target_peer_id
         and active(s.source_peer_id) and active(s.target_peer_id)),
        key=lambda s: s.id)) if enabled else ()
    return LocalView(local_peer_id, by_id, chosen)


def load_view(conn, local_peer_id: str, *, enabled: bool = True) -> LocalView:
    return build_view(local_peer_id, repo.list_peers(conn), repo.list_services(conn), enabled=enabled)


# --- netconf ----------------------------------------------------------------------------------------------------------

def service_spec(service: Service) -> ServiceSpec:
    return ServiceSpec(
        id=service.id, source_peer_id=service.source_peer_id, target_peer_id=service.target_peer_id,
        transport_type=service.transport_type, requires_interface=service.requires_interface,
        desired_ipv4_cidr=service.desired_ipv4_cidr, desired_ipv6_cidr=service.desired_ipv6_cidr,
        fully_transparent=service.fully_transparent, bandwidth_limit_mbps=service.bandwidth_limit_mbps,
        routes=tuple(RouteSpec(service.id, r.id, r.source_cidr, r.dest_cidr, r.priority, r.seq)
                     for r in service.routes))


def desired_state(view: LocalView, config: AgentConfig, *, proxied_connections: bool = False) -> DesiredState:
    return DesiredState(local_peer_id=view.local_peer_id, services=tuple(service_spec(s) for s in view.services),
                        tproxy_port=config.tunnel.tproxy_port, tunnel_port=config.tunnel.port,
                        lan_interface=config.lan_interface, proxied_connections=proxied_connections)


# --- QoS --------------------------------------------------------------------------------------------------------------

def qos_links(view: LocalView) -> list[ServiceLink]:
    """Every service of this peer, shaped on the way to its other peer (each peer shapes what it sends).

    The source shapes source->target on the interface towards the target, the target shapes target->source on the
    interface towards the source: together both directions hold the limit. Unlimited services are included too, so
    their slot priorities exist and a limit set later applies to connections already open.
    """
    links = []
    for service in view.services:
        address = tunnel_address(view.other_peer(service).address)
        if address is not None:
            links.append(ServiceLink(service.id, address, service.bandwidth_limit_mbps))
    return links


# --- data plane -------------------------------------------------------------------------------------------------------

def tunnel_address(api_address: str) -> str | None:
    """The tunnel address of a peer: the host part of its API ``address`` (``198.18.0.2:8080`` -> ``198.18.0.2``).

    A host name is resolved (first address); None when it cannot be, so one bad peer never blocks the others.
    """
    host = api_address.rsplit(":", 1)[0] if api_address.count(":") == 1 or api_address.startswith("[") \
        else api_address
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def bind_address(ipv4_cidr: str | None, ipv6_cidr: str | None) -> str | None:
    """Where re-originated connections of an interface service leave from: its (observed) IPv4, else IPv6."""
    for cidr in (ipv4_cidr, ipv6_cidr):
        if cidr:
            return str(ipaddress.ip_interface(cidr).ip)
    return None


def dataplane_config(view: LocalView, config: AgentConfig, *, priorities: Mapping[str, list[int]],
                     bind_addresses: Mapping[str, str | None]) -> dict[str, Any]:
    """The JSON document ``python -m arctic.dataplane`` reads (format: ``arctic.dataplane.config``).

    ``priorities``: QoS slot priorities per service (``QosManager.slot_priorities``); ``bind_addresses``: the
    observed address of each service interface on this (target) peer.
    """
    peers: dict[str, dict[str, str]] = {}
    for peer in sorted(view.peers.values(), key=lambda p: p.id):
        if not peer.is_member and peer.id != view.local_peer_id:
            continue
        address = tunnel_address(peer.address)
        if address is not None:
            peers[peer.id] = {"public_key": peer.public_key, "tunnel_address": address}
    services = []
    for s in view.services:
        entry: dict[str, Any] = {
            "id": s.id, "source_peer_id": s.source_peer_id, "target_peer_id": s.target_peer_id,
            "transport_type": s.transport_type, "fully_transparent": s.fully_transparent,
            "bind_address": bind_addresses.get(s.id) if s.target_peer_id == view.local_peer_id else None,
            "so_priorities": list(priorities.get(s.id, [])),
            "bandwidth_limit_mbps": s.bandwidth_limit_mbps,
            "routes": [{"id": r.id, "source_cidr": r.source_cidr, "dest_cidr": r.dest_cidr, "priority": r.priority,
                        "seq": r.seq} for r in s.routes],
        }
        services.append(entry)
    return {
        "local_peer_id": view.local_peer_id,
        "identity_key_file": str(Path(config.identity_path).resolve()),
        "tproxy_port": config.tunnel.tproxy_port,
        "tunnel_port": config.tunnel.port,
        "tunnel_congestion": config.tunnel.congestion,
        "kcp_port": config.tunnel.kcp_port or config.tunnel.port,
        "kcp_fec": config.tunnel.kcp_fec,
        "kcp_window": config.tunnel.kcp_window,
        "kcp_rate_mbit": config.tunnel.kcp_rate_mbit,
        "tunnel_bind": "::" if any(":" in p["tunnel_address"] for p in peers.values()) else "0.0.0.0",
        "encryption": config.tunnel.encryption,
        "drain_seconds": config.dataplane.drain_seconds,
        "workers": config.dataplane.workers,
        "peers": peers,
        "services": services,
        "stats_file": STATS_FILE,
    }
