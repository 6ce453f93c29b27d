"""What only one peer observes about a service, shown by every agent: interface facts and traffic counters.

* Interface facts (name, MAC, actual addresses, DHCP leases included): only the target peer creates a service's
  MACVLAN, so only it knows them. With them, where creating it stands (``interface_state``) and what it waits for
  or why it failed (``interface_detail``), so ``arctic services create`` can wait for the interface and say why
  it is not usable yet (see ``interface_progress``).
* Traffic counters (``traffic``: connections, bytes, throughput, refusals, last connection): the source peer's data
  plane accepts the service's connections, so its counters are the service's (``arctic.api.traffic``).

These are local observations and are never replicated: replicating them would re-sign the owner's record at every
lease change or connection. So that any agent answers ``services get`` / ``list`` with them, an agent asks the
peer that knows: one request per peer, with the caller's own bearer token (valid on every peer), a short timeout,
never chained. If that peer cannot be asked (unreachable, left the cluster, recovery-token caller), the local copy
is shown: empty interface fields, ``traffic: null``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests
from flask import request

from arctic.api.endpoint import agent
from arctic.api.forwarding import FORWARD_HEADER
from arctic.api.traffic import TrafficReader
from arctic.cluster import transport
from arctic.logs import get_logger
from arctic.store import repository as repo

if TYPE_CHECKING:
    from arctic.netconf.interfaces import InterfaceStatus

log = get_logger("api")
INTERFACE_FIELDS = ("interface_name", "interface_mac", "interface_ipv4_cidr", "interface_ipv6_cidr",
                    "interface_state", "interface_detail")
TIMEOUT_SECONDS = 2.0
#: ``interface_state`` values. Only ``pending``, ``waiting_for_lease``, ``down`` and ``unknown`` can still change
#: by themselves; ``up``, ``error`` (retried by every reconcile run, but only a fix ends it) and ``unmanaged`` are
#: where a wait ends.
INTERFACE_STATES = ("pending", "waiting_for_lease", "up", "down", "error", "unmanaged", "unknown")


def with_peer_observations(items: list[dict], *, ask_peers: bool = True) -> list[dict]:
    """Fill each service's interface facts (from its target peer) and traffic (from its source peer), in place.

    ``ask_peers=False`` (the answer to a write) fills only what this peer knows itself.
    """
    runtime = agent()
    local = runtime.local_peer_id
    traffic = TrafficReader(runtime)
    for item in items:
        item["traffic"] = traffic.of(item["id"]) if item.get("source_peer_id") == local else None
        item["interface_state"], item["interface_detail"] = (
            interface_progress(runtime, item["id"]) if item.get("requires_interface")
            and item.get("target_peer_id") == local else (None, None))
    if not ask_peers or request.headers.get(FORWARD_HEADER) or not request.headers.get("Authorization"):
        return items
    facts_from: dict[str, list[dict]] = {}  # peer -> services whose interface facts it has
    traffic_from: dict[str, list[dict]] = {}  # peer -> services whose traffic it counts
    for item in items:
        if item.get("requires_interface") and item.get("target_peer_id") != local:
            facts_from.setdefault(item["target_peer_id"], []).append(item)
        if item.get("source_peer_id") != local:
            traffic_from.setdefault(item["source_peer_id"], []).append(item)
    for peer_id in sorted(facts_from.keys() | traffic_from.keys()):
        observed, why_not = _observed_by(runtime, peer_id,
                                         _query(peer_id, peer_id in facts_from, peer_id in traffic_from))
        for item in facts_from.get(peer_id, []):
            facts = (observed or {}).get(item["id"])
            if facts is not None:
                item.update({key: facts.get(key) for key in INTERFACE_FIELDS})
            elif observed is not None:
                item["interface_state"], item["interface_detail"] = (
                    "pending", "the target peer has not received the service yet (replication is under way)")
            else:
                item["interface_state"], item["interface_detail"] = (
                    "unknown", f"the target peer could not be asked: {why_not}")
        for item in traffic_from.get(peer_id, []):
            item["traffic"] = ((observed or {}).get(item["id"]) or {}).get("traffic")
    return items


def interface_progress(runtime, service_id: str) -> tuple[str, str | None]:
    """(``interface_state``, ``interface_detail``) of a service whose target is this peer.

    Read from the reconcile worker's last run, the same run that recorded the interface facts, so state and facts
    agree; while a DHCP lease is awaited the worker re-checks within seconds, so neither lags the lease for long.
    """
    worker = runtime.reconcile_worker
    if worker is None:
        return "unmanaged", ("the target peer does not manage its kernel (apply_kernel: false), so it creates no"
                             " service interfaces")
    status = worker.interface_status.get(service_id)
    if status is None:
        failed = f" (its last reconcile run failed: {worker.failure})" if worker.failure else ""
        return "pending", f"the target peer has not reconciled the service yet{failed}"
    return _state_of(status)


def _state_of(status: InterfaceStatus) -> tuple[str, str | None]:
    """The state an operator acts on, from what the target observed after applying."""
    if status.error:
        return "error", status.error
    if status.state == "missing":
        return "pending", f"{status.name} does not exist on the target peer yet"
    if status.state == "down":
        return "down", f"{status.name} exists on the target peer but is down"
    if status.dhcp and not status.ipv4_cidr:
        if not status.dhcp_running:
            return "waiting_for_lease", (f"no DHCP client runs on {status.name} yet; the target peer starts one at"
                                         " its next reconcile run")
        return "waiting_for_lease", (f"the DHCP client on {status.name} has no lease yet: no DHCP server on the"
                                     f" network of {status.parent} has answered so far")
    return "up", None


def _query(peer_id: str, facts: bool, traffic: bool) -> dict[str, str]:
    """The smallest list the peer can answer with: its interface services, its own services, or (both) all."""
    if facts and not traffic:
        return {"target_peer_id": peer_id, "requires_interface": "true"}
    if traffic and not facts:
        return {"source_peer_id": peer_id}
    return {}


def _observed_by(runtime, peer_id: str, params: dict[str, str]) -> tuple[dict[str, dict] | None, str]:
    """The peer's own view of its services, by id; or None and why it could not be asked."""
    conn = runtime.db.read()
    peer = repo.get_peer(conn, peer_id)
    if peer is None:
        return None, "it is not a peer known to this agent"
    if not peer.is_member:
        return None, "it has left the cluster"
    if peer.id in repo.unreachable_peer_ids(conn):
        return None, f"it is unreachable from this agent ({peer.address})"
    headers = {FORWARD_HEADER: runtime.local_peer_id, "Authorization": request.headers["Authorization"]}
    try:
        resp = transport.raw(peer.address, "GET", "/v1/services", headers=headers, data=None, params=params,
                             timeout=TIMEOUT_SECONDS)
        body = resp.json() if resp.status_code == 200 else None
    except Exception as err:  # noqa: BLE001 - any failure: show the local copy
        log.debug("peer not asked for its observations", peer=peer_id, error=type(err).__name__)
        return None, _failure_text(err, peer.address)
    if not isinstance(body, list):
        log.debug("peer gave no observations", peer=peer_id, status=resp.status_code)
        return None, f"it answered HTTP {resp.status_code}"
    return {item["id"]: item for item in body if isinstance(item, dict) and isinstance(item.get("id"), str)}, ""


def _failure_text(err: Exception, address: str) -> str:
    """Why asking failed, in the words an operator checks a network with."""
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer from {address} within {TIMEOUT_SECONDS:g} s"
    if isinstance(err, requests.exceptions.ConnectionError):
        return f"cannot connect to {address}"
    return f"{type(err).__name__} while asking {address}"
