"""Finding the records a request names, with 404 messages that say where to look."""

from __future__ import annotations

from flask import request

from arctic.api.endpoint import agent
from arctic.api.rules import StoreCatalog, existing_service
from arctic.errors import InvalidRequest, NotFound
from arctic.ids import parse_id
from arctic.store import repository as repo


def parse_bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"query parameter {name} must be true or false, not {raw!r}")


def find_peer(ref: str, conn=None, field: str = "peer"):
    conn = conn if conn is not None else agent().db.read()
    peer_id = parse_id("peer", ref)
    peer = repo.get_peer(conn, peer_id) if peer_id else None
    if peer is None or peer.state == "revoked":
        raise NotFound(f"{field} not found: {ref} (check 'arctic peers list' and that the peer completed "
                       "its handshake)")
    return peer


def find_service(ref: str, conn=None):
    """The stored service ``ref`` names (404 otherwise, ``rules.existing_service``), read through ``conn``."""
    return existing_service(StoreCatalog(conn), ref)
