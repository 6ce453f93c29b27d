"""Rules that need a lookup live here, so the write handlers and the dry run share them.

A rule that only looks at the request itself is a schema or ``check_service_rules`` (``api/services.py``); a rule
that has to look at *other* records is here, taking those records as an argument: the write handlers pass what the
store holds (inside their write transaction), and the dry run (``api/plan.py``, which re-states rules against its
draft) passes its draft, so a planned change is refused with the very message the write would get.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from arctic.api.endpoint import agent
from arctic.errors import AlreadyExists
from arctic.store import repository as repo
from arctic.store.records import Service

ADDRESS_FIELDS = ("desired_ipv4_cidr", "desired_ipv6_cidr")


def check_desired_addresses_free(svc: Mapping[str, Any], *, current: Service | None = None,
                                 services: Iterable[Service] | None = None, conn: repo.Conn | None = None) -> None:
    """Refuse (409 ``ALREADY_EXISTS``) a desired interface address another service already desires on the same
    target peer: both MACVLANs would sit on one LAN, and two hosts answering for one address break both.

    ``svc`` is the complete service as it would be stored (a create's body with defaults, or an update merged
    onto ``current``). The host address is compared, whatever the prefix length (``.10/24`` and ``.10/25`` are
    one address). On an update only the fields whose address changes are checked, so a service keeps its own
    address and an unrelated change (a rename) is not blocked by a clash stored before this rule existed.
    ``services``: the records to compare with (the dry run's draft); default: the store's services of that target,
    which is the replicated view of the whole cluster, so a holder created on any agent is seen.
    """
    conn = conn if conn is not None else agent().db.read()
    target = svc["target_peer_id"]
    if services is None:
        services = repo.list_services(conn, target_peer_id=target, requires_interface=True)
    others = [s for s in services if s.target_peer_id == target and s.requires_interface
              and (current is None or s.id != current.id)]
    for key in ADDRESS_FIELDS:
        wanted = _host(svc.get(key))
        if wanted is None or (current is not None and wanted == _host(getattr(current, key))):
            continue
        holder = next((s for s in others if _host(getattr(s, key)) == wanted), None)
        if holder is not None:
            peer = repo.get_peer(conn, target)
            label = f"{holder.id} ({holder.name})" if holder.name else holder.id
            raise AlreadyExists(
                f"{key}: {wanted} is already the address of service {label} on peer "
                f"{peer.name if peer is not None and peer.name else target}; choose another address or update "
                "that service")


def _host(cidr: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return ipaddress.ip_interface(cidr).ip if cidr else None
