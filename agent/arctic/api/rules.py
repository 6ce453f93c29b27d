"""Rules that need a lookup live here, so the write handlers and the dry run share them.

A rule that only looks at the request itself is a schema, ``check_service_rules`` (``api/services.py``) or
``check_route_rules`` (``api/routes.py``); a rule that has to look at *other* records is here. It asks a
``Catalog`` for those records: the write handlers pass ``StoreCatalog`` over the store (their write transaction, so
check and write are atomic), the dry run (``api/plan.py``) passes its ``Draft``, the store with the plan's earlier
changes applied. Each rule and its error text are stated once, so a planned change is refused with the very message
the write would get.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from arctic.api.endpoint import agent
from arctic.cluster import limits
from arctic.errors import AlreadyExists, NotFound
from arctic.ids import parse_id
from arctic.store import repository as repo
from arctic.store.records import Route, Service

ADDRESS_FIELDS = ("desired_ipv4_cidr", "desired_ipv6_cidr")


class Catalog(Protocol):
    """Exactly the lookups the rules below make."""

    def service_by_id(self, service_id: str) -> Service | None:
        """The service with that (normalised) id, its routes included."""

    def service_id_named(self, name: str) -> str | None:
        """The id of a service named ``name``."""

    def service_count(self) -> int:
        """How many services exist."""

    def service_limit(self) -> int:
        """How many services the licence allows."""

    def interface_services_of(self, target_peer_id: str) -> Iterable[Service]:
        """The services with an interface (``requires_interface``) on that target peer."""

    def route_id_matching(self, service_id: str, source_cidr: str | None, dest_cidr: str | None) -> int | None:
        """The id of the route of that service with exactly this pair of CIDRs (None and "" both mean any)."""

    def peer_name(self, peer_id: str) -> str | None:
        """The name of a peer (None when it has none or is unknown)."""


class StoreCatalog:
    """The catalog over the store: the replicated view of the whole cluster, read through ``conn`` (a read
    connection, or the write transaction the check must share); default: this agent's read connection."""

    def __init__(self, conn: repo.Conn | None = None) -> None:
        self.conn = conn if conn is not None else agent().db.read()

    def service_by_id(self, service_id: str) -> Service | None:
        return repo.get_service(self.conn, service_id)

    def service_id_named(self, name: str) -> str | None:
        found = repo.find_service_by_name(self.conn, name)
        return found.id if found is not None else None

    def service_count(self) -> int:
        return repo.count_services(self.conn)

    def service_limit(self) -> int:
        return agent().licence.max_services

    def interface_services_of(self, target_peer_id: str) -> Iterable[Service]:
        return repo.list_services(self.conn, target_peer_id=target_peer_id, requires_interface=True)

    def route_id_matching(self, service_id: str, source_cidr: str | None, dest_cidr: str | None) -> int | None:
        return repo.find_route_by_match(self.conn, service_id, source_cidr, dest_cidr)

    def peer_name(self, peer_id: str) -> str | None:
        peer = repo.get_peer(self.conn, peer_id)
        return peer.name if peer is not None else None


# --- services ---------------------------------------------------------------------------------------------------

def existing_service(catalog: Catalog, ref: str) -> Service:
    """The service ``ref`` names (``svc_…`` or the bare ULID), or 404 ``NOT_FOUND``."""
    service_id = parse_id("svc", ref)
    service = catalog.service_by_id(service_id) if service_id else None
    if service is None:
        raise NotFound(f"service not found: {ref} (list services with 'arctic services list')")
    return service


def check_name_free(catalog: Catalog, name: str | None, *, current: Service | None = None) -> None:
    """Refuse (409 ``ALREADY_EXISTS``) a name another service has. ``current``: the service being updated; keeping
    its own name is checked against nothing (so a clash stored before, by two agents at once, blocks no update)."""
    if not name or (current is not None and name == current.name):
        return
    holder = catalog.service_id_named(name)
    if holder is not None and (current is None or holder != current.id):
        raise AlreadyExists(f"a service named {name!r} already exists")


def check_service_limit(catalog: Catalog) -> None:
    """Refuse (422 ``SERVICE_LIMIT_EXCEEDED``) one more service when the licence's are all in use. What the
    catalog sees; the write also takes a slot cluster-wide (``cluster/limits.py``)."""
    used, limit = catalog.service_count(), catalog.service_limit()
    if used >= limit:
        raise limits.SERVICE.refusal(used, limit)


def check_desired_addresses_free(catalog: Catalog, svc: Mapping[str, Any], *, current: Service | None = None) -> None:
    """Refuse (409 ``ALREADY_EXISTS``) a desired interface address another service already desires on the same
    target peer: both MACVLANs would sit on one LAN, and two hosts answering for one address break both.

    ``svc`` is the complete service as it would be stored (a create's body with defaults, or an update merged
    onto ``current``). The host address is compared, whatever the prefix length (``.10/24`` and ``.10/25`` are
    one address). On an update only the fields whose address changes are checked, so a service keeps its own
    address and an unrelated change (a rename) is not blocked by a clash stored before this rule existed.
    """
    target = svc["target_peer_id"]
    others = [s for s in catalog.interface_services_of(target) if current is None or s.id != current.id]
    for key in ADDRESS_FIELDS:
        wanted = _host(svc.get(key))
        if wanted is None or (current is not None and wanted == _host(getattr(current, key))):
            continue
        holder = next((s for s in others if _host(getattr(s, key)) == wanted), None)
        if holder is not None:
            label = f"{holder.id} ({holder.name})" if holder.name else holder.id
            raise AlreadyExists(
                f"{key}: {wanted} is already the address of service {label} on peer "
                f"{catalog.peer_name(target) or target}; choose another address or update that service")


def _host(cidr: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return ipaddress.ip_interface(cidr).ip if cidr else None


# --- routes -----------------------------------------------------------------------------------------------------

def existing_route(service: Service, route_id: int) -> Route:
    """The route ``route_id`` of ``service`` (as the catalog returned it, routes included), or 404 ``NOT_FOUND``."""
    found = next((r for r in service.routes if r.id == route_id), None)
    if found is None:
        raise NotFound(f"route {route_id} not found in {service.id} (list them with 'arctic routes list --service "
                       f"{service.id}')")
    return found


def check_route_pair_free(catalog: Catalog, service_id: str, route: Mapping[str, Any], *,
                          route_id: int | None = None) -> None:
    """Refuse (409 ``ALREADY_EXISTS``) a route whose pair of CIDRs another route of the same service has: a route
    is identified within its service by that pair. ``route_id``: the route being updated (it may keep its pair)."""
    source, dest = route.get("source_cidr"), route.get("dest_cidr")
    holder = catalog.route_id_matching(service_id, source, dest)
    if holder is None or holder == route_id:
        return
    if route_id is None:
        raise AlreadyExists(f"route {holder} of {service_id} already matches source {source or 'any'} / "
                            f"destination {dest or 'any'}; update it instead")
    raise AlreadyExists(f"route {holder} of {service_id} already has these CIDRs")

