"""Peers of the cluster: list/get (with what this agent observes of their liveness), join (handshake),
rename (forwarded to that peer: only it signs its record), revoke (cluster-wide, final) and leave
(``remove-self``: a signed deactivation of the local peer)."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate

from arctic.api.endpoint import agent, endpoint
from arctic.api.fields import StrictString
from arctic.api.forwarding import owner_answers
from arctic.api.lookup import find_peer, parse_bool_arg
from arctic.api.validation import json_body, load
from arctic.auth import scopes as scope_rules
from arctic.cluster import handshake
from arctic.errors import InvalidRequest
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339

bp = Blueprint("peers", __name__)
log = get_logger("cluster")


class PeerSchema(Schema):
    id = fields.String(metadata={"example": "peer_01KBYMHC35F0N070F3XXMEZAZR"})
    name = fields.String()
    public_key = fields.String()
    is_local = fields.Boolean()
    address = fields.String(metadata={"example": "198.18.0.1:8080"})
    state = fields.String(metadata={"description": "active | unreachable | deactivated | revoked"})
    created_at = fields.String()


class PeerQuery(Schema):
    is_local = fields.Boolean()


def _peer_view(peer, unreachable: set[str]) -> dict:
    """The replicated record, with ``state`` showing ``unreachable`` when this agent cannot reach it."""
    out = peer.to_api()
    if out["state"] == "active" and not peer.is_local and peer.id in unreachable:
        out["state"] = "unreachable"
    return out


@bp.get("/v1/peers")
@endpoint("List peers", scope=scope_rules.PEERS_READ, query=PeerQuery, response=PeerSchema, many=True)
def list_peers():
    conn = agent().db.read()
    unreachable = repo.unreachable_peer_ids(conn)
    return [_peer_view(p, unreachable) for p in repo.list_peers(conn, parse_bool_arg("is_local"))]


@bp.get("/v1/peers/<peer_id>")
@endpoint("Get a peer", scope=scope_rules.PEERS_READ, response=PeerSchema, errors=(404,))
def get_peer(peer_id: str):
    return _peer_view(find_peer(peer_id), repo.unreachable_peer_ids(agent().db.read()))


class PeerAdd(Schema):
    address = StrictString(required=True, metadata={"example": "198.18.0.2:8080", "description": "host:port"})
    name = StrictString(metadata={"description": "name for the peer if it has none yet"})


class PeerUpdate(Schema):
    name = StrictString(required=True, validate=validate.Length(max=63))


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if address.startswith("http://"):
        return _check_address(address.removeprefix("http://").rstrip("/"))
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"address {address!r} must be host:port, e.g. 198.18.0.2:8080")
    return address


@bp.post("/v1/peers")
@endpoint("Add a peer: handshake with the agent at address", scope=scope_rules.PEERS_WRITE, body=PeerAdd,
          response=PeerSchema, status=201, write=True, errors=(400, 409, 422))
def add_peer():
    runtime = agent()
    body = load(PeerAdd(), json_body())
    peer_id = handshake.join(runtime, _check_address(body["address"]), body.get("name"))
    runtime.gossip_soon()
    return find_peer(peer_id).to_api(), 201


@bp.put("/v1/peers/<peer_id>")
@endpoint("Rename a peer (forwarded to that peer: only it may change its record)", scope=scope_rules.PEERS_WRITE,
          body=PeerUpdate, response=PeerSchema, write=True, errors=(400, 404, 422))
@owner_answers(lambda peer_id, **_: find_peer(peer_id).id, parse=lambda: load(PeerUpdate(), json_body()))
def update_peer(peer_id: str, body: dict):
    runtime = agent()
    peer = find_peer(peer_id)
    with runtime.db.write() as tx:
        tx.execute("UPDATE peers SET name = ?, updated_at = ? WHERE id = ?",
                   (body["name"], to_rfc3339(runtime.clock()), peer.id))
        tx.touch("peers", peer.id)
    return find_peer(peer.id).to_api()


@bp.delete("/v1/peers/self")
@endpoint("Remove this agent from the cluster (signed deactivation)", scope=scope_rules.PEERS_WRITE, write=True)
def remove_self():
    runtime = agent()
    with runtime.db.write() as tx:
        tx.execute("UPDATE peers SET state = 'deactivated', updated_at = ? WHERE id = ?",
                   (to_rfc3339(runtime.clock()), runtime.local_peer_id))
        tx.touch("peers", runtime.local_peer_id)
    log.warning("this peer deactivated itself", peer_id=runtime.local_peer_id)
    runtime.gossip_soon()
    return {"deactivated": True, "peer_id": runtime.local_peer_id}


@bp.delete("/v1/peers/<peer_id>")
@endpoint("Revoke a remote peer cluster-wide (final: it cannot silently rejoin)", scope=scope_rules.PEERS_WRITE,
          write=True, errors=(400, 404))
def delete_peer(peer_id: str):
    runtime = agent()
    peer = find_peer(peer_id)
    if peer.is_local:
        raise InvalidRequest("cannot delete the local peer; use 'arctic peers remove-self' to leave the cluster")
    with runtime.db.write() as tx:
        tx.execute("UPDATE peers SET state = 'revoked', updated_at = ? WHERE id = ?",
                   (to_rfc3339(runtime.clock()), peer.id))
        tx.execute("DELETE FROM peer_candidates WHERE peer_id = ?", (peer.id,))
        tx.touch("peers", peer.id)
    log.warning("peer revoked", peer_id=peer.id, address=peer.address)
    runtime.gossip_soon()
    return {"deleted": True, "id": peer.id}
