"""Joining peers: identity fetch, challenge-response over Ed25519 identities, licence checks.

The joining side (``join``) fetches the remote identity, refuses early on an obvious licence
mismatch, then sends a sealed handshake carrying its own signed peer record, its licence and a
fresh nonce. The answering side (``answer``) checks the licence (same customer, trusted issuer),
the signature, revocation and the node limit, stores the joiner and answers with its own signed
record plus its signature over the joiner's nonce: both sides have then proven key possession.
"""

from __future__ import annotations

import base64
import secrets

from arctic.cluster import limits, messages, transport
from arctic.cluster.identity import verify_signature
from arctic.cluster.licence import LicenceError, verify_licence
from arctic.cluster.replication import Envelope, Rejected, canonical, stored
from arctic.errors import AlreadyExists, ApiError
from arctic.logs import get_logger
from arctic.store import repository as repo

log = get_logger("cluster")


def _fail(reason: str, code: str = "HANDSHAKE_FAILED") -> ApiError:
    return ApiError(f"handshake failed: {reason}", code=code, status=422)


def _own_envelope(runtime) -> Envelope:
    env = stored(runtime.db.read(), "peer", runtime.local_peer_id)
    if env is None:
        runtime.replicator.reseal_all()
        env = stored(runtime.db.read(), "peer", runtime.local_peer_id)
    return env


def _reserve_node(runtime, peer_id: str) -> None:
    """A new member takes a node slot: checked here first, then reserved cluster-wide (``limits``)."""
    if len(limits.active_peers(runtime.db.read())) + 1 > runtime.licence.max_nodes:
        raise _fail(f"node limit reached ({runtime.licence.max_nodes} nodes)", "NODE_LIMIT_EXCEEDED")
    limits.reserve(runtime, limits.NODE, peer_id)


def _check_peer_envelope(env: Envelope) -> None:
    if env.kind != "peer" or env.author != env.id or env.body is None:
        raise _fail("invalid signature (peer record is not self-signed)")
    if not verify_signature(env.body["public_key"], env.signed_part(), base64.b64decode(env.sig)):
        raise _fail("invalid signature")


def _adopt_peer(runtime, env: Envelope) -> None:
    """Store a handshaken peer's own record (it is trusted from now on)."""
    with runtime.db.write() as tx:
        tx.replicated = True
        current = stored(tx, "peer", env.id)
        if current is not None and current.rank >= env.rank:
            return
        from arctic.cluster import records
        from arctic.cluster.replication import _put

        _put(tx, env)
        records.materialise(tx, "peer", env.id, env.body, runtime.local_peer_id)
        tx.execute("DELETE FROM peer_candidates WHERE peer_id = ?", (env.id,))


def answer(runtime, packet: dict) -> dict:
    """Server side of ``POST /v1/cluster/handshake``."""
    msg = packet.get("msg") if isinstance(packet, dict) else None
    if not isinstance(msg, dict) or not isinstance(msg.get("peer"), dict):
        raise _fail("malformed handshake")
    try:
        env = Envelope.from_wire(msg["peer"])
    except (KeyError, ValueError, TypeError) as err:
        raise _fail(f"malformed peer record ({err})") from None
    _check_peer_envelope(env)
    try:
        msg = messages.open_sealed(packet, lambda sender: env.body["public_key"] if sender == env.id else None)
    except messages.MessageError as err:
        log.warning("handshake refused", reason=str(err), peer_id=env.id)
        raise _fail("invalid signature" if "signature" in str(err) else str(err)) from None
    if msg.get("to") != runtime.local_peer_id:
        raise _fail(f"this agent is {runtime.local_peer_id}, not {msg.get('to')}")
    challenge = msg.get("challenge")
    if not isinstance(challenge, str) or len(challenge) < 32:
        raise _fail("malformed handshake (missing challenge)")
    try:
        their = verify_licence(msg.get("licence") or {}, list(runtime.config.issuer_public_keys))
    except LicenceError as err:
        raise _fail(f"licence invalid ({err.message})", "LICENSE_INVALID") from None
    if their.customer_id != runtime.licence.customer_id:
        log.warning("handshake refused: licence mismatch", peer_id=env.id, their_customer=their.customer_id)
        raise _fail("license mismatch", "LICENSE_MISMATCH")
    existing = repo.get_peer(runtime.db.read(), env.id)
    if existing is not None and existing.state == "revoked":
        log.warning("handshake refused: revoked peer tried to rejoin", peer_id=env.id)
        raise _fail("peer was revoked from this cluster")
    if existing is None or existing.state == "deactivated":
        _reserve_node(runtime, env.id)
    _adopt_peer(runtime, env)
    runtime.adopt_cluster_id(msg.get("cluster_id"))
    log.info("peer handshake answered", peer_id=env.id, address=env.body["address"])
    nonce_sig = runtime.identity.sign(canonical({"challenge": challenge, "for": env.id}))
    reply = {"peer": _own_envelope(runtime).to_wire(), "licence": runtime.licence.raw,
             "cluster_id": runtime.cluster().get("cluster_id"),
             "nonce_sig": base64.b64encode(nonce_sig).decode()}
    runtime.gossip_soon()
    return messages.seal(runtime.identity, runtime.local_peer_id, reply)


def join(runtime, address: str, name_hint: str | None = None, *, known_ok: bool = False) -> str:
    """Client side: handshake with the agent at ``address``; returns its peer id."""
    try:
        ident = transport.call(address, "GET", "/v1/cluster/identity", timeout=5)
    except transport.PeerCallError as err:
        raise _fail(err.reason if err.reason != "http error" else f"{address}: {err.detail}", "HANDSHAKE_FAILED") \
            from None
    peer_id = ident.get("peer_id")
    if not isinstance(peer_id, str) or not peer_id.startswith("peer_"):
        raise _fail(f"{address} did not answer with an Arctic agent identity")
    if peer_id == runtime.local_peer_id:
        raise ApiError("that address is this agent itself", code="INVALID_REQUEST", status=400)
    existing = repo.get_peer(runtime.db.read(), peer_id)
    if existing is not None and existing.state == "active" and not known_ok:
        raise AlreadyExists("peer already exists in cluster")
    if existing is not None and existing.state == "revoked":
        raise _fail("peer was revoked from this cluster; revocation is final")
    if ident.get("customer_id") and ident["customer_id"] != runtime.licence.customer_id:
        raise _fail("license mismatch", "LICENSE_MISMATCH")
    if existing is None or existing.state == "deactivated":
        _reserve_node(runtime, peer_id)
    nonce = secrets.token_hex(16)
    packet = messages.seal(runtime.identity, runtime.local_peer_id, {
        "peer": _own_envelope(runtime).to_wire(), "licence": runtime.licence.raw, "challenge": nonce, "to": peer_id,
        "cluster_id": runtime.cluster().get("cluster_id"), "name_hint": name_hint or ""})
    try:
        reply = transport.call(address, "POST", "/v1/cluster/handshake", json=packet, timeout=10)
    except transport.PeerCallError as err:
        if err.body.get("code") in ("LICENSE_MISMATCH", "NODE_LIMIT_EXCEEDED", "LICENSE_INVALID",
                                    "HANDSHAKE_FAILED", "PEER_UNREACHABLE"):
            raise ApiError(err.body.get("error", "handshake failed"), code=err.body["code"], status=422) from None
        raise _fail(err.reason if err.reason != "http error" else err.detail) from None
    try:
        env = Envelope.from_wire((reply.get("msg") or {}).get("peer"))
    except (KeyError, ValueError, TypeError):
        raise _fail("malformed handshake answer") from None
    _check_peer_envelope(env)
    if env.id != peer_id:
        raise _fail("invalid signature (answer came from another identity)")
    try:
        msg = messages.open_sealed(reply, lambda sender: env.body["public_key"] if sender == env.id else None)
        their = verify_licence(msg.get("licence") or {}, list(runtime.config.issuer_public_keys))
    except messages.MessageError:
        raise _fail("invalid signature") from None
    except LicenceError as err:
        raise _fail(f"licence invalid ({err.message})", "LICENSE_INVALID") from None
    if their.customer_id != runtime.licence.customer_id:
        raise _fail("license mismatch", "LICENSE_MISMATCH")
    if not verify_signature(env.body["public_key"], canonical({"challenge": nonce, "for": runtime.local_peer_id}),
                            base64.b64decode(msg.get("nonce_sig", ""))):
        raise _fail("invalid signature (nonce not signed by the peer's identity)")
    try:
        _adopt_peer(runtime, env)
    except Rejected as err:
        raise _fail(str(err)) from None
    runtime.adopt_cluster_id(msg.get("cluster_id"))
    log.info("peer joined", peer_id=peer_id, address=address)
    return peer_id
