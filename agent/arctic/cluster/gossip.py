"""Replication between peers: push on change, periodic anti-entropy, liveness and discovery.

One background thread. It wakes when a local write produced envelopes (push to every trusted peer,
in parallel) and every ``interval`` seconds (anti-entropy with every peer: compare registry hashes,
and only when they differ exchange digests, send what the other lacks and fetch what we lack).
``request_round`` (``cluster sync``) runs a round at once. Three consecutive failures mark a peer
unreachable; it is retried with exponential back-off. Peers learned through others (transitive
discovery) are handshaken from here.

Messages from a revoked peer are refused everywhere, which is what stops a revoked peer from
silently re-joining; a peer that left (``remove-self``) is no longer gossiped with.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from arctic.cluster import handshake, messages, transport
from arctic.cluster.replication import Envelope
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.timeutil import to_rfc3339, utcnow

log = get_logger("cluster")
UNREACHABLE_AFTER = 3
MAX_BACKOFF = 60.0
PUSH_WORKERS = 8


def trusted_key(runtime, sender: object) -> str | None:
    """The key to check a peer message with; refuses revoked senders with a reason that says so."""
    if not isinstance(sender, str):
        return None
    peer = repo.get_peer(runtime.db.read(), sender)
    if peer is None or peer.is_local:
        return None
    if peer.state == "revoked":
        raise messages.MessageError(f"peer {sender} was revoked from this cluster; its messages are refused")
    return peer.public_key


class GossipStats:
    """Counters for ``cluster status`` and the convergence benchmark (application bytes, both ways)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rounds = self.pushes = self.messages = self.bytes_sent = self.bytes_received = 0

    def meter(self, sent: int, received: int) -> None:
        with self._lock:
            self.messages += 1
            self.bytes_sent += sent
            self.bytes_received += received

    def count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {"rounds": self.rounds, "pushes": self.pushes, "messages": self.messages,
                    "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}


class Gossiper:
    def __init__(self, runtime, interval: float = 5.0):
        self.runtime = runtime
        self.interval = interval
        self.stats = GossipStats()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._round_wanted = threading.Event()
        self._round_done = threading.Condition()
        self._rounds_finished = 0
        self._round_running = False
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=PUSH_WORKERS, thread_name_prefix="gossip-push")
        runtime.replicator.on_outbox = self.poke

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gossip", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poke(self) -> None:
        """Push pending local changes now (called after every local write that produced envelopes)."""
        self._wake.set()

    def request_round(self, wait: float = 0.0) -> bool:
        """Run an anti-entropy round now; with ``wait``, block until it finished (True) or time ran out."""
        with self._round_done:  # a round already under way may have missed the change: wait for the next one
            target = self._rounds_finished + 1 + int(self._round_running)
        self._round_wanted.set()
        self._wake.set()
        if wait <= 0 or not self.alive():
            return False
        deadline = time.monotonic() + wait
        with self._round_done:
            while self._rounds_finished < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._round_done.wait(left)
        return True

    def _run(self) -> None:
        next_round = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.05, min(self.interval, next_round - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set() or not self.runtime.bootstrapped:
                continue
            try:
                self.push_outbox()
                if self._round_wanted.is_set() or time.monotonic() >= next_round:
                    self._round_wanted.clear()
                    with self._round_done:
                        self._round_running = True
                    try:
                        self.round()
                    finally:
                        next_round = time.monotonic() + self.interval
                        with self._round_done:
                            self._round_running = False
                            self._rounds_finished += 1
                            self._round_done.notify_all()
            except Exception:
                log.exception("gossip round failed")

    # -- peers -------------------------------------------------------------------------------
    def _remote_peers(self):
        return [p for p in repo.list_peers(self.runtime.db.read(), is_local=False) if p.is_member]

    def _local_active(self) -> bool:
        me = repo.local_peer(self.runtime.db.read())
        return me is not None and me.is_member

    def _due(self, peer_id: str) -> bool:
        row = self.runtime.db.read().execute("SELECT next_attempt FROM peer_health WHERE peer_id = ?",
                                             (peer_id,)).fetchone()
        return row is None or row[0] <= time.time()

    def _record(self, peer_id: str, ok: bool, error: str = "", registry_hash: str | None = None) -> None:
        db = self.runtime.db.read()
        row = db.execute("SELECT failures, reachable FROM peer_health WHERE peer_id = ?", (peer_id,)).fetchone()
        failures = 0 if ok else (row[0] if row else 0) + 1
        reachable = 1 if ok else (0 if failures >= UNREACHABLE_AFTER else (row[1] if row else None))
        backoff = 0.0 if ok else min(MAX_BACKOFF, self.interval * (2 ** max(0, failures - UNREACHABLE_AFTER)))
        now = to_rfc3339(utcnow())
        db.execute(
            "INSERT INTO peer_health (peer_id, reachable, last_seen, failures, next_attempt, registry_hash, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(peer_id) DO UPDATE SET reachable = excluded.reachable,"
            " last_seen = coalesce(excluded.last_seen, peer_health.last_seen), failures = excluded.failures,"
            " next_attempt = excluded.next_attempt,"
            " registry_hash = coalesce(excluded.registry_hash, peer_health.registry_hash),"
            " last_error = excluded.last_error",
            (peer_id, reachable, now if ok else None, failures, time.time() + backoff if failures >= UNREACHABLE_AFTER
             else 0.0, registry_hash, error or None))
        if not ok and failures == UNREACHABLE_AFTER:
            log.warning("peer unreachable", peer_id=peer_id, error=error, retry_in=backoff)
        elif ok and row is not None and row[1] == 0:
            log.info("peer reachable again", peer_id=peer_id)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, peer, payload: dict, timeout: float = 5.0) -> dict:
        body = dict(payload, cluster_id=self.runtime.cluster().get("cluster_id"))
        body.setdefault("registry_hash", self.runtime.replicator.registry_hash())
        packet = messages.seal(self.runtime.identity, self.runtime.local_peer_id, body)
        reply = transport.call(peer.address, "POST", "/v1/cluster/gossip", json=packet, timeout=timeout,
                               meter=self.stats.meter)
        return messages.open_sealed(reply, lambda sender: peer.public_key if sender == peer.id else None)

    def push_outbox(self) -> None:
        envelopes = self.runtime.replicator.take_outbox()
        if not envelopes:
            return
        self.stats.count("pushes")
        wire = [e.to_wire() for e in envelopes]
        targets = [p for p in self._remote_peers() if self._due(p.id)]
        list(self._pool.map(lambda peer: self._push_to(peer, wire), targets))

    def _push_to(self, peer, wire: list[dict]) -> None:
        try:
            reply = self._send(peer, {"type": "push", "records": wire})
            self._record(peer.id, True, registry_hash=reply.get("registry_hash"))
        except (transport.PeerCallError, messages.MessageError) as err:
            self._record(peer.id, False, str(err))

    def sync_with(self, peer) -> None:
        """Anti-entropy with one peer: equal registry hashes end it; else digests, then the differences."""
        replicator = self.runtime.replicator
        mine = replicator.registry_hash()
        reply = self._send(peer, {"type": "hash", "registry_hash": mine})
        self.runtime.adopt_cluster_id(reply.get("cluster_id"))
        if reply.get("registry_hash") != mine:
            reply = self._send(peer, {"type": "digest", "digest": replicator.digest()})
            records = _parse_records(reply.get("records") or [], peer.id)
            if records:
                self._note_candidates(records, peer.id)
                replicator.accept(records, self.runtime.local_peer_id)
            wanted = reply.get("want") or []
            if wanted:
                envs = replicator.envelopes([k for k in wanted if isinstance(k, str)])
                reply = self._send(peer, {"type": "push", "records": [e.to_wire() for e in envs]})
        self._record(peer.id, True, registry_hash=reply.get("registry_hash"))

    def round(self) -> None:
        with self._round_lock:
            self.stats.count("rounds")
            if not self._local_active():
                return  # this peer left the cluster (remove-self) or was revoked: it no longer syncs
            for peer in self._remote_peers():
                if not self._due(peer.id):
                    continue
                try:
                    self.sync_with(peer)
                except (transport.PeerCallError, messages.MessageError, ValueError, KeyError, TypeError) as err:
                    self._record(peer.id, False, str(err))
            self._discover()

    def _discover(self) -> None:
        """Handshake peers we learned about from others (A knows B, B knows C -> A meets C)."""
        rows = self.runtime.db.read().execute("SELECT * FROM peer_candidates").fetchall()
        for row in rows:
            if repo.get_peer(self.runtime.db.read(), row["peer_id"]) is not None or not self._due(row["peer_id"]):
                continue
            try:
                handshake.join(self.runtime, row["address"], known_ok=True)
                log.info("discovered peer joined", peer_id=row["peer_id"], via=row["learned_from"])
            except Exception as err:  # noqa: BLE001 - any failure counts as an attempt
                self._record(row["peer_id"], False, str(err))

    # -- receiving ---------------------------------------------------------------------------
    def answer(self, packet: dict) -> dict:
        """Server side of ``POST /v1/cluster/gossip``; raises ``MessageError`` for refused messages."""
        runtime = self.runtime
        msg = messages.open_sealed(packet, self._trusted_key)
        sender = msg["sender"]
        runtime.adopt_cluster_id(msg.get("cluster_id"))
        reply: dict = {}
        envelopes = _parse_records(msg.get("records") or [], sender)
        self._note_candidates(envelopes, sender)
        if envelopes:
            runtime.replicator.accept(envelopes, runtime.local_peer_id)
        if msg.get("type") == "digest" and isinstance(msg.get("digest"), dict):
            reply["records"] = [e.to_wire() for e in runtime.replicator.newer_than(msg["digest"])]
            reply["want"] = runtime.replicator.wanted_from(msg["digest"])
        self._record(sender, True, registry_hash=msg.get("registry_hash") if isinstance(
            msg.get("registry_hash"), str) else None)
        reply["registry_hash"] = runtime.replicator.registry_hash()
        reply["cluster_id"] = runtime.cluster().get("cluster_id")
        return messages.seal(runtime.identity, runtime.local_peer_id, reply)

    def _trusted_key(self, sender: object) -> str | None:
        return trusted_key(self.runtime, sender)

    def _note_candidates(self, envelopes: list[Envelope], sender: str) -> None:
        conn = self.runtime.db.read()
        for env in envelopes:
            if env.kind != "peer" or env.deleted or env.id == self.runtime.local_peer_id:
                continue
            body = env.body or {}
            if repo.get_peer(conn, env.id) is None and body.get("state") == "active" and \
                    isinstance(body.get("address"), str) and isinstance(body.get("public_key"), str):
                conn.execute("INSERT OR IGNORE INTO peer_candidates (peer_id, address, public_key, learned_from,"
                             " learned_at) VALUES (?, ?, ?, ?, ?)",
                             (env.id, body["address"], body["public_key"], sender, to_rfc3339(utcnow())))


def _parse_records(raw_records: object, sender: object) -> list[Envelope]:
    """The replicated records of a message or reply; a malformed one is refused (and logged), not fatal."""
    if not isinstance(raw_records, list):
        raise messages.MessageError("records must be a list")
    envelopes = []
    for raw in raw_records:
        try:
            envelopes.append(Envelope.from_wire(raw))
        except (KeyError, ValueError, TypeError) as err:
            log.warning("malformed replicated record refused", sender=sender, error=str(err))
    return envelopes
