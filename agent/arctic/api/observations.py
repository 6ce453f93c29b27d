"""What only one peer observes about a service, shown by every agent: interface facts and traffic counters.

* Interface facts (name, MAC, actual addresses, DHCP leases included): only the target peer creates a service's
  MACVLAN, so only it knows them.
* Traffic counters (``traffic``: connections, bytes, throughput, refusals, last connection): the source peer's data
  plane accepts the service's connections, so its counters are the service's (``arctic.api.traffic``).

These are local observations and are never replicated: replicating them would re-sign the owner's record at every
lease change or connection. So that any agent answers ``services get`` / ``list`` with them, an agent asks the
peer that knows: one request per peer, with the caller's own bearer token (valid on every peer), a short timeout,
never chained. If that peer cannot be asked (unreachable, left the cluster, recovery-token caller), the local copy
is shown: empty interface fields, ``traffic: null``.
"""

from __future__ import annotations

from flask import request

from arctic.api.endpoint import agent
from arctic.api.forwarding import FORWARD_HEADER
from arctic.api.traffic import TrafficReader
from arctic.cluster import transport
from arctic.logs import get_logger
from arctic.store import repository as repo

log = get_logger("api")
INTERFACE_FIELDS = ("interface_name", "interface_mac", "interface_ipv4_cidr", "interface_ipv6_cidr")
TIMEOUT_SECONDS = 2.0


def with_peer_observations(items: list[dict], *, ask_peers: bool = True) -> list[dict]:
    """Fill each service's interface facts (from its target peer) and traffic (from its source peer), in place.

    ``ask_peers=False`` (the answer to a write) fills only what this peer knows itself.
    """
    runtime = agent()
    local = runtime.local_peer_id
    traffic = TrafficReader(runtime)
    for item in items:
        item["traffic"] = traffic.of(item["id"]) if item.get("source_peer_id") == local else None
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
        observed = _observed_by(runtime, peer_id, _query(peer_id, peer_id in facts_from, peer_id in traffic_from))
        for item in facts_from.get(peer_id, []):
            facts = observed.get(item["id"])
            if facts is not None:
                item.update({key: facts.get(key) for key in INTERFACE_FIELDS})
        for item in traffic_from.get(peer_id, []):
            item["traffic"] = (observed.get(item["id"]) or {}).get("traffic")
    return items


def _query(peer_id: str, facts: bool, traffic: bool) -> dict[str, str]:
    """The smallest list the peer can answer with: its interface services, its own services, or (both) all."""
    if facts and not traffic:
        return {"target_peer_id": peer_id, "requires_interface": "true"}
    if traffic and not facts:
        return {"source_peer_id": peer_id}
    return {}


def _observed_by(runtime, peer_id: str, params: dict[str, str]) -> dict[str, dict]:
    """The peer's own view of its services, by id ({} when it cannot be asked)."""
    conn = runtime.db.read()
    peer = repo.get_peer(conn, peer_id)
    if peer is None or not peer.is_member or peer.id in repo.unreachable_peer_ids(conn):
        return {}
    headers = {FORWARD_HEADER: runtime.local_peer_id, "Authorization": request.headers["Authorization"]}
    try:
        resp = transport.raw(peer.address, "GET", "/v1/services", headers=headers, data=None, params=params,
                             timeout=TIMEOUT_SECONDS)
        body = resp.json() if resp.status_code == 200 else None
    except Exception as err:  # noqa: BLE001 - any failure: show the local copy
        log.debug("peer not asked for its observations", peer=peer_id, error=type(err).__name__)
        return {}
    if not isinstance(body, list):
        log.debug("peer gave no observations", peer=peer_id, status=resp.status_code)
        return {}
    return {item["id"]: item for item in body if isinstance(item, dict) and isinstance(item.get("id"), str)}
