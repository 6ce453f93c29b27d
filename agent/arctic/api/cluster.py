"""Cluster identity (public), sync trigger and status, and the peer-to-peer endpoints.

The peer-to-peer endpoints (handshake, gossip, slot reservation) carry no bearer token: each
message is sealed (signed) by its sender's identity key and checked against the key this agent
trusts for that peer. A refused message is answered 401 and logged at WARN with the reason.
"""

from __future__ import annotations

from flask import Blueprint, request
from marshmallow import Schema, fields

from arctic import __version__
from arctic.api.cluster_sync import sync_cluster
from arctic.api.endpoint import agent, endpoint
from arctic.auth import scopes as scope_rules
from arctic.cluster import gossip, handshake, limits, messages
from arctic.errors import NotBootstrapped, Unauthorized
from arctic.logs import get_logger
from arctic.store import repository as repo

bp = Blueprint("cluster", __name__)
log = get_logger("cluster")


class IdentitySchema(Schema):
    peer_id = fields.String()
    public_key = fields.String()
    license_id = fields.String()
    customer_id = fields.String()
    cluster_id = fields.String()
    version = fields.String()


class PeerSyncSchema(Schema):
    peer_id = fields.String()
    name = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    is_local = fields.Boolean(metadata={"description": "the agent that answered"})
    reachable = fields.Boolean(metadata={"description": "false: the peer could not be asked (see error)"})
    reconciled = fields.Boolean(metadata={"description": "a reconcile run ended on that peer for this request"})
    replicated = fields.Boolean(metadata={"description": "that peer's replication round ended in time"})
    actions = fields.List(fields.String(), metadata={"description": "what the run changed (empty: no change)"})
    errors = fields.List(fields.String(), metadata={"description": "what the run could not do"})
    seconds = fields.Float(allow_none=True, metadata={"description": "how long the run took"})
    error = fields.String(allow_none=True, metadata={
        "description": "why the peer could not be asked or its run did not end (unreachable, timeout, refused)"})
    note = fields.String(allow_none=True, metadata={"description": "why nothing ran although nothing failed"})


class SyncSchema(Schema):
    triggered = fields.Boolean()
    scope = fields.String(metadata={"description": "cluster: every member peer was asked; local: only this agent "
                                                   "(a recovery-token caller, or a request forwarded by a peer)"})
    note = fields.String(allow_none=True, metadata={"description": "why the scope is local"})
    peers = fields.List(fields.Nested(PeerSyncSchema), metadata={"description": "this agent first, then the others"})


class StatusSchema(Schema):
    peer_id = fields.String()
    cluster_id = fields.String()
    registry_hash = fields.String()
    coordinator = fields.String(allow_none=True, metadata={"description": "peer that hands out licence slots"})
    totals = fields.Dict(keys=fields.String(), values=fields.Integer())
    gossip = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "rounds, pushes, messages, bytes_sent, bytes_received"})
    peers = fields.List(fields.Dict())


@bp.get("/v1/cluster/identity")
@endpoint("This agent's identity (public, used before a handshake)", scope=None, response=IdentitySchema,
          always=True, errors=(409,))
def identity():
    runtime = agent()
    if not runtime.bootstrapped:
        raise NotBootstrapped("agent is not bootstrapped yet")
    cluster = runtime.cluster()
    return {"peer_id": runtime.local_peer_id, "public_key": runtime.identity.public_key_b64,
            "license_id": runtime.licence.license_id, "customer_id": runtime.licence.customer_id,
            "cluster_id": cluster.get("cluster_id"), "version": __version__}


@bp.post("/v1/cluster/sync")
@endpoint("Sync the cluster now: a replication round, then a reconcile on every member peer, each reporting what "
          "it changed (answers once every peer answered or its timeout passed)", scope=scope_rules.ADMIN,
          response=SyncSchema)
def sync():
    return sync_cluster()


@bp.get("/v1/cluster/status")
@endpoint("Gossip/replication status: per-peer last seen, reachability, registry hashes",
          scope=scope_rules.PEERS_READ, response=StatusSchema)
def status():
    runtime = agent()
    conn = runtime.db.read()
    peers = repo.list_peers(conn)
    local_hash = runtime.replicator.registry_hash()
    peer_rows = runtime.peer_status(local_hash)
    coordinator = limits.coordinator(conn)
    return {
        "peer_id": runtime.local_peer_id, "cluster_id": runtime.cluster().get("cluster_id"),
        "registry_hash": local_hash, "coordinator": coordinator.id if coordinator else None,
        "totals": {"peers": len(peers), "services": repo.count_services(conn),
                   "routes": sum(len(s.routes) for s in repo.list_services(conn)),
                   "credentials": len(repo.list_credentials(conn))},
        "gossip": runtime.gossiper.stats.as_dict() if runtime.gossiper is not None else {},
        "peers": peer_rows,
    }


@bp.post("/v1/cluster/handshake")
@endpoint("Peer-to-peer: challenge-response join (signed by the joining peer)", scope=None, always=True,
          errors=(422,))
def handshake_endpoint():
    return handshake.answer(agent(), request.get_json(silent=True) or {})


@bp.post("/v1/cluster/gossip")
@endpoint("Peer-to-peer: replication push and anti-entropy (signed by a trusted peer)", scope=None, always=True,
          errors=(401,))
def gossip_endpoint():
    runtime = agent()
    if not runtime.bootstrapped or runtime.gossiper is None:
        raise NotBootstrapped("agent is not serving replication")
    try:
        return runtime.gossiper.answer(request.get_json(silent=True) or {})
    except messages.MessageError as err:
        log.warning("replication message refused", reason=str(err), remote=request.remote_addr)
        raise Unauthorized(f"replication message refused: {err}") from None


@bp.post("/v1/cluster/reserve")
@endpoint("Peer-to-peer: reserve a licence slot (service or node) from the coordinator (signed by a trusted "
          "peer)", scope=None, always=True, errors=(400, 401))
def reserve_endpoint():
    runtime = agent()
    if not runtime.bootstrapped:
        raise NotBootstrapped("agent is not bootstrapped yet")
    try:
        return limits.answer(runtime, request.get_json(silent=True) or {},
                             lambda sender: gossip.trusted_key(runtime, sender))
    except messages.MessageError as err:
        log.warning("slot reservation refused", reason=str(err), remote=request.remote_addr)
        raise Unauthorized(f"slot reservation refused: {err}") from None
