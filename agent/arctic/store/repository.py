"""Reads and writes of the model. Every write happens inside ``Database.write()``.

Functions take the open transaction (``tx``) or the read connection explicitly so that callers can
group a check and a write atomically (e.g. "licence allows one more service" + insert).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from arctic.domain import precedence
from arctic.store.database import Transaction
from arctic.store.records import Credential, Peer, Route, Service

Conn = sqlite3.Connection | Transaction

# -- meta --------------------------------------------------------------------------------------


def get_meta(conn: Conn, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def set_meta(tx: Transaction, key: str, value: Any) -> None:
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value)),
    )
    tx.touch("meta")


# -- peers -------------------------------------------------------------------------------------


def list_peers(conn: Conn, is_local: bool | None = None) -> list[Peer]:
    sql, args = "SELECT * FROM peers", ()
    if is_local is not None:
        sql, args = sql + " WHERE is_local = ?", (int(is_local),)
    return [Peer.from_row(r) for r in conn.execute(sql + " ORDER BY is_local DESC, created_at, id", args)]


def unreachable_peer_ids(conn: Conn) -> set[str]:
    """Peers this agent currently cannot reach (``peer_health``, kept by the gossiper)."""
    return {r[0] for r in conn.execute("SELECT peer_id FROM peer_health WHERE reachable = 0").fetchall()}


def get_peer(conn: Conn, peer_id: str) -> Peer | None:
    row = conn.execute("SELECT * FROM peers WHERE id = ?", (peer_id,)).fetchone()
    return Peer.from_row(row) if row else None


def local_peer(conn: Conn) -> Peer | None:
    row = conn.execute("SELECT * FROM peers WHERE is_local = 1").fetchone()
    return Peer.from_row(row) if row else None


def insert_peer(tx: Transaction, peer: Peer) -> None:
    tx.execute(
        "INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (peer.id, peer.name, peer.public_key, peer.address, int(peer.is_local), peer.state,
         peer.created_at, peer.updated_at),
    )
    tx.touch("peers", peer.id)


# -- services and routes -----------------------------------------------------------------------

SERVICE_COLUMNS = (
    "name", "source_peer_id", "target_peer_id", "transport_type", "requires_interface", "desired_ipv4_cidr",
    "desired_ipv6_cidr", "fully_transparent", "bandwidth_limit_mbps", "interface_name", "interface_mac",
    "interface_ipv4_cidr", "interface_ipv6_cidr",
)


def _routes_by_service(conn: Conn, service_ids: list[str]) -> dict[str, list[Route]]:
    out: dict[str, list[Route]] = {sid: [] for sid in service_ids}
    if not service_ids:
        return out
    marks = ",".join("?" * len(service_ids))
    for row in conn.execute(f"SELECT * FROM routes WHERE service_id IN ({marks})", tuple(service_ids)):
        out[row["service_id"]].append(Route.from_row(row))
    return {sid: precedence.ordered(routes) for sid, routes in out.items()}


def list_services(conn: Conn, *, source_peer_id: str | None = None, target_peer_id: str | None = None,
                  requires_interface: bool | None = None) -> list[Service]:
    where, args = [], []
    for column, value in (("source_peer_id", source_peer_id), ("target_peer_id", target_peer_id)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if requires_interface is not None:
        where.append("requires_interface = ?")
        args.append(int(requires_interface))
    sql = "SELECT * FROM services" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
    rows = conn.execute(sql, tuple(args)).fetchall()
    routes = _routes_by_service(conn, [r["id"] for r in rows])
    return [Service.from_row(r, routes[r["id"]]) for r in rows]


def get_service(conn: Conn, service_id: str) -> Service | None:
    row = conn.execute("SELECT * FROM services WHERE id = ?", (service_id,)).fetchone()
    if row is None:
        return None
    return Service.from_row(row, _routes_by_service(conn, [service_id])[service_id])


def find_service_by_name(conn: Conn, name: str) -> Service | None:
    row = conn.execute("SELECT id FROM services WHERE name = ?", (name,)).fetchone()
    return get_service(conn, row[0]) if row else None


def count_services(conn: Conn) -> int:
    return conn.execute("SELECT count(*) FROM services").fetchone()[0]


def insert_service(tx: Transaction, service_id: str, fields: dict, now: str) -> None:
    cols = ("id", *SERVICE_COLUMNS, "created_at", "updated_at")
    values = (service_id, *(_db_value(fields.get(c)) for c in SERVICE_COLUMNS), now, now)
    tx.execute(f"INSERT INTO services ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
    tx.touch("services", service_id)


def update_service(tx: Transaction, service_id: str, fields: dict, now: str) -> None:
    sets = [c for c in fields if c in SERVICE_COLUMNS]
    if not sets:
        return
    tx.execute(
        f"UPDATE services SET {', '.join(f'{c} = ?' for c in sets)}, updated_at = ? WHERE id = ?",
        (*(_db_value(fields[c]) for c in sets), now, service_id),
    )
    tx.touch("services", service_id)


def delete_service(tx: Transaction, service_id: str) -> bool:
    deleted = tx.execute("DELETE FROM services WHERE id = ?", (service_id,)).rowcount > 0
    if deleted:
        tx.touch("services", service_id)
        tx.touch("routes")
    return deleted


def find_route_by_match(conn: Conn, service_id: str, source_cidr: str | None, dest_cidr: str | None) -> int | None:
    row = conn.execute(
        "SELECT id FROM routes WHERE service_id = ? AND ifnull(source_cidr, '') = ? AND ifnull(dest_cidr, '') = ?",
        (service_id, source_cidr or "", dest_cidr or ""),
    ).fetchone()
    return row[0] if row else None


def insert_route(tx: Transaction, service_id: str, priority: int, source_cidr: str | None,
                 dest_cidr: str | None, seq: int, now: str) -> int:
    route_id = tx.execute("SELECT next_route_id FROM services WHERE id = ?", (service_id,)).fetchone()[0]
    tx.execute("UPDATE services SET next_route_id = ?, updated_at = ? WHERE id = ?", (route_id + 1, now, service_id))
    tx.execute(
        "INSERT INTO routes (service_id, id, priority, source_cidr, dest_cidr, seq, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (service_id, route_id, priority, source_cidr, dest_cidr, seq, now, now),
    )
    tx.touch("routes")
    tx.touch("services", service_id)
    return route_id


def get_route(conn: Conn, service_id: str, route_id: int) -> Route | None:
    row = conn.execute("SELECT * FROM routes WHERE service_id = ? AND id = ?", (service_id, route_id)).fetchone()
    return Route.from_row(row) if row else None


def update_route(tx: Transaction, service_id: str, route_id: int, fields: dict, now: str) -> None:
    sets = [c for c in ("priority", "source_cidr", "dest_cidr") if c in fields]
    tx.execute(
        f"UPDATE routes SET {', '.join(f'{c} = ?' for c in sets)}, updated_at = ? WHERE service_id = ? AND id = ?",
        (*(fields[c] for c in sets), now, service_id, route_id),
    )
    tx.touch("routes")
    tx.touch("services", service_id)


def delete_route(tx: Transaction, service_id: str, route_id: int) -> bool:
    deleted = tx.execute("DELETE FROM routes WHERE service_id = ? AND id = ?", (service_id, route_id)).rowcount > 0
    if deleted:
        tx.touch("routes")
        tx.touch("services", service_id)
    return deleted


def _db_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


# -- credentials -------------------------------------------------------------------------------


def list_credentials(conn: Conn, include_revoked: bool = False) -> list[Credential]:
    sql = "SELECT * FROM credentials" + ("" if include_revoked else " WHERE revoked_at IS NULL")
    return [Credential.from_row(r) for r in conn.execute(sql + " ORDER BY created_at, client_id")]


def get_credential(conn: Conn, client_id: str) -> Credential | None:
    row = conn.execute("SELECT * FROM credentials WHERE client_id = ?", (client_id,)).fetchone()
    return Credential.from_row(row) if row else None


def cluster_credential(conn: Conn) -> Credential | None:
    # Each bootstrapped agent brought one; after merging clusters the oldest is "the" shared one.
    row = conn.execute("SELECT * FROM credentials WHERE is_cluster = 1 AND revoked_at IS NULL"
                       " ORDER BY created_at, client_id").fetchone()
    return Credential.from_row(row) if row else None


def insert_credential(tx: Transaction, cred: Credential) -> None:
    tx.execute(
        "INSERT INTO credentials (client_id, secret_hash, scopes, license_id, is_cluster, version, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (cred.client_id, cred.secret_hash, json.dumps(cred.scopes), cred.license_id, int(cred.is_cluster),
         cred.version, cred.created_at),
    )
    tx.touch("credentials", cred.client_id)


def rotate_credential(tx: Transaction, client_id: str, new_hash: str, previous_valid_until: str,
                      rotated_by: str, now: str) -> None:
    tx.execute(
        "UPDATE credentials SET previous_secret_hash = secret_hash, previous_valid_until = ?, secret_hash = ?,"
        " version = version + 1, rotated_by = ?, rotated_at = ? WHERE client_id = ?",
        (previous_valid_until, new_hash, rotated_by, now, client_id),
    )
    tx.touch("credentials", client_id)


def revoke_credential(tx: Transaction, client_id: str, now: str) -> None:
    tx.execute("UPDATE credentials SET revoked_at = ? WHERE client_id = ?", (now, client_id))
    tx.touch("credentials", client_id)


def touch_credential_use(conn: Conn, client_id: str, now: str) -> None:
    conn.execute("UPDATE credentials SET last_used_at = ? WHERE client_id = ?", (now, client_id))
