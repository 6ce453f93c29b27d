"""Service interface facts (name, MAC, actual addresses) as the service's target peer observes them.

Only the target peer creates a service's MACVLAN, so only it knows the MAC and the addresses it really has (DHCP
leases included). These are local observations and are never replicated: replicating them would re-sign the
owner's record at every lease change. So that any agent answers ``services get`` / ``list`` with them, an agent
that is not the target asks the target peer: one request per target peer, with the caller's own bearer token
(valid on every peer), a short timeout, never chained. If the target cannot be asked (unreachable, left the
cluster, recovery-token caller), the local copy is shown, whose interface fields are empty.
"""

from __future__ import annotations

from flask import request

from arctic.api.endpoint import agent
from arctic.api.forwarding import FORWARD_HEADER
from arctic.cluster import transport
from arctic.logs import get_logger
from arctic.store import repository as repo

log = get_logger("api")
INTERFACE_FIELDS = ("interface_name", "interface_mac", "interface_ipv4_cidr", "interface_ipv6_cidr")
TIMEOUT_SECONDS = 2.0


def with_target_observations(items: list[dict]) -> list[dict]:
    """Fill the interface fields of services whose target is another peer from that peer's answer (in place)."""
    if request.headers.get(FORWARD_HEADER) or not request.headers.get("Authorization"):
        return items
    runtime = agent()
    by_target: dict[str, list[dict]] = {}
    for item in items:
        if item.get("requires_interface") and item.get("target_peer_id") != runtime.local_peer_id:
            by_target.setdefault(item["target_peer_id"], []).append(item)
    for target, group in by_target.items():
        observed = _observed_by(runtime, target)
        for item in group:
            facts = observed.get(item["id"])
            if facts is not None:
                item.update({key: facts.get(key) for key in INTERFACE_FIELDS})
    return items


def _observed_by(runtime, target_peer_id: str) -> dict[str, dict]:
    """The target peer's own view of its interface services, by id ({} when it cannot be asked)."""
    conn = runtime.db.read()
    peer = repo.get_peer(conn, target_peer_id)
    if peer is None or not peer.is_member or peer.id in repo.unreachable_peer_ids(conn):
        return {}
    headers = {FORWARD_HEADER: runtime.local_peer_id, "Authorization": request.headers["Authorization"]}
    try:
        resp = transport.raw(peer.address, "GET", "/v1/services", headers=headers, data=None,
                             params={"target_peer_id": target_peer_id, "requires_interface": "true"},
                             timeout=TIMEOUT_SECONDS)
        body = resp.json() if resp.status_code == 200 else None
    except Exception as err:  # noqa: BLE001 - any failure: show the local copy
        log.debug("target peer not asked for interface facts", peer=target_peer_id, error=type(err).__name__)
        return {}
    if not isinstance(body, list):
        log.debug("target peer gave no interface facts", peer=target_peer_id, status=resp.status_code)
        return {}
    return {item["id"]: item for item in body if isinstance(item, dict) and isinstance(item.get("id"), str)}
