"""Cluster-wide licence limits: one coordinator hands out service and node slots.

Each agent can check its licence against the records it holds, but two agents that each see one
free slot would both take it: their new records only meet later. So a slot is *reserved* first,
from one peer everyone agrees on without an election: the **coordinator**, the active peer with the
smallest id. In one write transaction the coordinator counts the records it knows plus the
unexpired reservations not yet backed by a record, and grants or refuses. A grant expires after
``RESERVATION_TTL``, by when the record has replicated to the coordinator and counts by itself.

When the coordinator cannot be reached, a peer still creates inside a **safe zone**: with ``used``
slots known here, ``n`` active peers and ``s`` slots this peer already took without the coordinator,
it may take one more while ``(used - s) + n * (s + 1) <= limit``. If every active peer follows the
same rule from the same starting point, together they stay within the limit. Outside the safe zone
the request is refused with ``PEER_UNREACHABLE`` naming the coordinator.

Reservations are local bookkeeping (never replicated), kept in ``cluster_reservations`` (migration 003).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from arctic.cluster import messages, transport
from arctic.errors import ApiError, InvalidRequest
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.database import Database

log = get_logger("cluster")

RESERVATION_TTL = 120.0  # seconds a grant holds a slot before the record itself must count
SAFE_ZONE_TTL = 900.0  # slots taken without the coordinator count against this peer this long
RESERVE_TIMEOUT = 3.0

@dataclass(frozen=True)
class SlotKind:
    name: str
    code: str
    limit_of: Callable  # Licence -> int

    def refusal(self, used: object, limit: object) -> ApiError:
        if self.name == "service":
            return ApiError(f"licence allows {limit} services and all are in use across the cluster: delete "
                            "unused services or upgrade the licence ('arctic license show')",
                            code=self.code, status=422)
        return ApiError(f"handshake failed: node limit reached ({limit} nodes allowed by the licence, "
                        f"{used} in use or joining)", code=self.code, status=422)


SERVICE = SlotKind("service", "SERVICE_LIMIT_EXCEEDED", lambda lic: lic.max_services)
NODE = SlotKind("node", "NODE_LIMIT_EXCEEDED", lambda lic: lic.max_nodes)
KINDS = {k.name: k for k in (SERVICE, NODE)}


@dataclass(frozen=True)
class Grant:
    granted: bool
    used: int
    limit: int


def active_peers(conn) -> list:
    return [p for p in repo.list_peers(conn) if p.is_member]


def coordinator(conn):
    """The active peer with the smallest id (None before bootstrap)."""
    peers = active_peers(conn)
    return min(peers, key=lambda p: p.id) if peers else None


def _holds_slot(conn, kind: SlotKind, record_id: str) -> bool:
    """The record already exists, so it already counts."""
    if kind is SERVICE:
        return conn.execute("SELECT 1 FROM services WHERE id = ?", (record_id,)).fetchone() is not None
    peer = repo.get_peer(conn, record_id)
    return peer is not None and peer.is_member


_PENDING_SQL = {
    "service": "FROM cluster_reservations r WHERE r.kind = 'service' AND r.expires_at > ?"
               " AND NOT EXISTS (SELECT 1 FROM services s WHERE s.id = r.id)"
               " AND NOT EXISTS (SELECT 1 FROM replica t WHERE t.kind = 'service' AND t.id = r.id AND t.deleted = 1)",
    "node": "FROM cluster_reservations r WHERE r.kind = 'node' AND r.expires_at > ?"
            " AND NOT EXISTS (SELECT 1 FROM peers p WHERE p.id = r.id)",
}


def used_slots(conn, kind: SlotKind, now: float) -> int:
    """Records that exist plus unexpired reservations not backed by a record (yet)."""
    records = repo.count_services(conn) if kind is SERVICE else len(active_peers(conn))
    pending = conn.execute(f"SELECT count(*) {_PENDING_SQL[kind.name]}", (now,)).fetchone()[0]
    return records + pending


def grant(db: Database, kind: SlotKind, record_id: str, requester: str, limit: int) -> Grant:
    """Coordinator side: count and reserve in one write transaction (so two requests cannot both win)."""
    now = time.time()
    with db.write() as tx:
        tx.execute("DELETE FROM cluster_reservations WHERE expires_at <= ?", (now,))
        used = used_slots(tx, kind, now)
        if _holds_slot(tx, kind, record_id):
            return Grant(True, used, limit)
        held = tx.execute("SELECT 1 FROM cluster_reservations WHERE kind = ? AND id = ?",
                          (kind.name, record_id)).fetchone()
        if held is None and used + 1 > limit:
            return Grant(False, used, limit)
        tx.execute("INSERT INTO cluster_reservations (kind, id, requester, safe_zone, expires_at)"
                   " VALUES (?, ?, ?, 0, ?) ON CONFLICT(kind, id) DO UPDATE SET expires_at = excluded.expires_at",
                   (kind.name, record_id, requester, now + RESERVATION_TTL))
        return Grant(True, used + (held is None), limit)


def reserve(runtime, kind: SlotKind, record_id: str) -> None:
    """Take a slot for ``record_id`` before creating it; raises ``ApiError`` (422) when refused."""
    limit = kind.limit_of(runtime.licence)
    coord = coordinator(runtime.db.read())
    if coord is None or coord.id == runtime.local_peer_id:
        _local_grant(runtime, kind, record_id, limit)
        return
    failure = _ask(runtime, coord, kind, record_id, limit, redirects=1)
    if failure is not None:
        _safe_zone(runtime, kind, record_id, limit, coord, failure)


def _local_grant(runtime, kind: SlotKind, record_id: str, limit: int) -> None:
    result = grant(runtime.db, kind, record_id, runtime.local_peer_id, limit)
    if not result.granted:
        raise kind.refusal(result.used, result.limit)


def _known_unreachable(runtime, peer_id: str) -> str | None:
    row = runtime.db.read().execute("SELECT reachable, next_attempt, last_error FROM peer_health"
                                    " WHERE peer_id = ?", (peer_id,)).fetchone()
    if row is not None and row["reachable"] == 0 and row["next_attempt"] > time.time():
        return f"unreachable ({row['last_error'] or 'no answer'})"
    return None


def _ask(runtime, coord, kind: SlotKind, record_id: str, limit: int, redirects: int) -> str | None:
    """Ask ``coord`` for the slot: None when granted, the reason when it could not be asked."""
    reason = _known_unreachable(runtime, coord.id)
    if reason is not None:
        return reason
    packet = messages.seal(runtime.identity, runtime.local_peer_id, {
        "type": "reserve", "kind": kind.name, "id": record_id, "limit": limit, "to": coord.id})
    try:
        reply = transport.call(coord.address, "POST", "/v1/cluster/reserve", json=packet, timeout=RESERVE_TIMEOUT)
        msg = messages.open_sealed(reply, lambda sender: coord.public_key if sender == coord.id else None)
    except transport.PeerCallError as err:
        return str(err)
    except messages.MessageError as err:
        return f"invalid answer ({err})"
    if msg.get("granted") is True:
        return None
    redirect = msg.get("redirect")
    if isinstance(redirect, str) and redirects > 0:
        if redirect == runtime.local_peer_id:
            _local_grant(runtime, kind, record_id, limit)
            return None
        target = repo.get_peer(runtime.db.read(), redirect)
        if target is not None and target.is_member:
            return _ask(runtime, target, kind, record_id, limit, redirects - 1)
        return f"it names {redirect} as coordinator, a peer this agent does not know yet"
    raise kind.refusal(msg.get("used", "?"), msg.get("limit", limit))


def _safe_zone(runtime, kind: SlotKind, record_id: str, limit: int, coord, failure: str) -> None:
    now = time.time()
    me = runtime.local_peer_id
    with runtime.db.write() as tx:
        tx.execute("DELETE FROM cluster_reservations WHERE expires_at <= ?", (now,))
        used = used_slots(tx, kind, now)
        if used + 1 > limit:
            raise kind.refusal(used, limit)
        taken = tx.execute("SELECT count(*) FROM cluster_reservations WHERE kind = ? AND safe_zone = 1"
                           " AND requester = ?", (kind.name, me)).fetchone()[0]
        peers = len(active_peers(tx))
        if (used - taken) + peers * (taken + 1) > limit:
            raise ApiError(
                f"cannot reserve a {kind.name} slot: the coordinator {coord.name or coord.id} ({coord.id}, "
                f"{coord.address}) is {failure}, and with {used} of {limit} slots in use across {peers} active "
                "peers creating more without it could exceed the licence; retry when it is reachable",
                code="PEER_UNREACHABLE", status=422)
        tx.execute("INSERT INTO cluster_reservations (kind, id, requester, safe_zone, expires_at)"
                   " VALUES (?, ?, ?, 1, ?) ON CONFLICT(kind, id) DO UPDATE SET expires_at = excluded.expires_at",
                   (kind.name, record_id, me, now + SAFE_ZONE_TTL))
    log.warning("coordinator unreachable; slot taken within the safe zone", kind=kind.name, id=record_id,
                coordinator=coord.id, reason=failure, used=used + 1, limit=limit)


def answer(runtime, packet: object, trusted_key: Callable[[object], str | None]) -> dict:
    """Coordinator side of ``POST /v1/cluster/reserve`` (a sealed message from a trusted peer)."""
    msg = messages.open_sealed(packet, trusted_key)
    if msg.get("to") != runtime.local_peer_id:
        raise InvalidRequest(f"this agent is {runtime.local_peer_id}, not {msg.get('to')}")
    kind = KINDS.get(msg.get("kind"))
    record_id, their_limit = msg.get("id"), msg.get("limit")
    if kind is None or not isinstance(record_id, str) or not isinstance(their_limit, int) \
            or isinstance(their_limit, bool):
        raise InvalidRequest("malformed reservation: needs kind (service|node), id and limit")
    conn = runtime.db.read()
    coord = coordinator(conn)
    if _holds_slot(conn, kind, record_id):
        reply: dict = {"granted": True}  # already a member / an existing service: nothing to reserve
    elif coord is not None and coord.id != runtime.local_peer_id:
        reply = {"granted": False, "redirect": coord.id}
    else:
        result = grant(runtime.db, kind, record_id, msg["sender"],
                       min(kind.limit_of(runtime.licence), their_limit))
        reply = {"granted": result.granted, "used": result.used, "limit": result.limit}
        if not result.granted:
            log.info("slot refused", kind=kind.name, id=record_id, requester=msg["sender"], used=result.used,
                     limit=result.limit)
    return messages.seal(runtime.identity, runtime.local_peer_id, reply)
