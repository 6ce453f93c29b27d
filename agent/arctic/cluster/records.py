"""Replicated record bodies: how each kind is read from, and written back to, the store tables.

A *service* record carries its routes (and its route-id counter): the service's source peer is the
only author of both, so they change together and never conflict. Local observations (interface
MAC/addresses, credential last use, peer liveness) are not part of any record.
"""

from __future__ import annotations

import json
from typing import Any

from arctic.logs import get_logger
from arctic.store.database import Transaction

log = get_logger("cluster")
KINDS = ("peer", "service", "credential")

_SERVICE_FIELDS = ("id", "name", "source_peer_id", "target_peer_id", "transport_type", "requires_interface",
                   "desired_ipv4_cidr", "desired_ipv6_cidr", "fully_transparent", "bandwidth_limit_mbps",
                   "next_route_id", "created_at", "updated_at")
_ROUTE_FIELDS = ("id", "priority", "source_cidr", "dest_cidr", "seq", "created_at", "updated_at")
_PEER_FIELDS = ("id", "name", "public_key", "address", "state", "created_at", "updated_at")
_CREDENTIAL_FIELDS = ("client_id", "secret_hash", "previous_secret_hash", "previous_valid_until", "scopes",
                      "license_id", "is_cluster", "version", "rotated_by", "rotated_at", "created_at", "revoked_at")


def snapshot(conn, kind: str, record_id: str) -> dict | None:
    """The replicated body of one record as stored now; None when it does not exist."""
    if kind == "service":
        row = conn.execute("SELECT * FROM services WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            return None
        body = {k: row[k] for k in _SERVICE_FIELDS}
        for flag in ("requires_interface", "fully_transparent"):
            body[flag] = bool(body[flag])
        routes = conn.execute("SELECT * FROM routes WHERE service_id = ? ORDER BY id", (record_id,)).fetchall()
        body["routes"] = [{k: r[k] for k in _ROUTE_FIELDS} for r in routes]
        return body
    if kind == "peer":
        row = conn.execute("SELECT * FROM peers WHERE id = ?", (record_id,)).fetchone()
        return {k: row[k] for k in _PEER_FIELDS} if row else None
    if kind == "credential":
        row = conn.execute("SELECT * FROM credentials WHERE client_id = ?", (record_id,)).fetchone()
        if row is None:
            return None
        body = {k: row[k] for k in _CREDENTIAL_FIELDS}
        body["scopes"] = json.loads(body["scopes"])
        body["is_cluster"] = bool(body["is_cluster"])
        return body
    raise ValueError(f"unknown record kind {kind!r}")


def materialise(tx: Transaction, kind: str, record_id: str, body: dict | None, local_peer_id: str | None) -> None:
    """Make the store tables say what ``body`` says (``None`` = the record is deleted)."""
    if kind == "service":
        tx.execute("DELETE FROM services WHERE id = ?", (record_id,))
        if body is not None:
            cols = [c for c in _SERVICE_FIELDS]
            values = {c: _db(body.get(c)) for c in cols}
            values["name"] = _settle_name_clash(tx, record_id, values["name"])
            tx.execute(f"INSERT INTO services ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       tuple(values[c] for c in cols))
            for route in body.get("routes", []):
                tx.execute("INSERT INTO routes (service_id, id, priority, source_cidr, dest_cidr, seq, created_at,"
                           " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (record_id, *(route[k] for k in _ROUTE_FIELDS)))
        tx.touch("services")
        tx.touch("routes")
    elif kind == "peer":
        if body is None:
            tx.execute("DELETE FROM peers WHERE id = ?", (record_id,))
        else:
            tx.execute(
                "INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name,"
                " public_key = excluded.public_key, address = excluded.address, state = excluded.state,"
                " updated_at = excluded.updated_at",
                (body["id"], body["name"], body["public_key"], body["address"], int(body["id"] == local_peer_id),
                 body["state"], body["created_at"], body["updated_at"]))
        tx.touch("peers")
    elif kind == "credential":
        if body is None:
            tx.execute("DELETE FROM credentials WHERE client_id = ?", (record_id,))
        else:
            cols = list(_CREDENTIAL_FIELDS)
            values = tuple(json.dumps(body[c]) if c == "scopes" else _db(body.get(c)) for c in cols)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "client_id")
            tx.execute(f"INSERT INTO credentials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                       f" ON CONFLICT(client_id) DO UPDATE SET {updates}", values)
        tx.touch("credentials")
    else:
        raise ValueError(f"unknown record kind {kind!r}")


def _settle_name_clash(tx: Transaction, record_id: str, name: str | None) -> str | None:
    """Two source peers created services with the same name at the same time: the older id keeps it.

    The replicated bodies stay as their owners wrote them (so registry hashes still agree); only the
    local table drops the name of the younger service, the same way on every peer.
    """
    if name is None:
        return None
    row = tx.execute("SELECT id FROM services WHERE name = ? AND id != ?", (name, record_id)).fetchone()
    if row is None:
        return name
    log.warning("service name used twice; the older service keeps it", name=name, kept=min(row[0], record_id),
                unnamed=max(row[0], record_id))
    if row[0] < record_id:
        return None
    tx.execute("UPDATE services SET name = NULL WHERE id = ?", (row[0],))
    return name


def _db(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value
