"""The running agent: the one object that ties configuration, store, identity and licence together.

Blueprints reach it through ``arctic.api.endpoint.agent()``; the daemon builds it; tests build it
against a temporary data dir. Long-lived background parts (reconciler, replication) subscribe to
``changed`` and are started by the daemon, not here, so the API can be tested on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from arctic.cluster.identity import Identity, load_identity
from arctic.cluster.licence import Licence, LicenceError, LicenceState, licence_state, verify_licence
from arctic.config import AgentConfig
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.database import Database
from arctic.timeutil import parse_rfc3339, to_rfc3339, utcnow

log = get_logger("cluster")
SESSION_STATS_FRESH = 5.0  # seconds: the data plane rewrites its stats file every second


class StartupError(RuntimeError):
    """The agent must not start; the message tells the operator why and what to do."""


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.clock = clock
        self.db = Database(config.db_path)
        self.identity: Identity | None = None
        self.recovery_token: str | None = None
        self._licence: Licence | None = None
        self._lock = threading.Lock()
        self._readiness: list[Callable[[], dict[str, str]]] = []
        self.api_extensions: list[Callable] = []
        if config.identity_path.exists() and self.bootstrapped:
            self.identity = load_identity(config.identity_path)
        from arctic.cluster.replication import Replicator  # noqa: PLC0415 - cluster imports the store

        self.replicator = Replicator(self.db, lambda: self.identity, lambda: self.local_peer_id)
        self.gossiper = None  # set by the daemon (background thread); absent in API-only tests
        self.reconcile_worker = None  # set by the daemon when apply_kernel (arctic.daemon.reconcile)
        self.dataplane_stats: Callable[[], dict] | None = None  # the data plane's stats file, when one runs

    # -- state -------------------------------------------------------------------------------
    @property
    def bootstrapped(self) -> bool:
        return repo.get_meta(self.db.read(), "local_peer_id") is not None

    @property
    def local_peer_id(self) -> str | None:
        return repo.get_meta(self.db.read(), "local_peer_id")

    def cluster(self) -> dict:
        return repo.get_meta(self.db.read(), "cluster", {}) or {}

    def peer_public_key(self, peer_id: str) -> str | None:
        peer = repo.get_peer(self.db.read(), peer_id)
        return peer.public_key if peer and peer.state != "revoked" else None

    # -- licence -----------------------------------------------------------------------------
    def verify_stored_licence(self) -> None:
        """Run at every start: a bootstrapped agent with an unverifiable licence refuses to start."""
        doc = repo.get_meta(self.db.read(), "license")
        if doc is None:
            return
        try:
            self._licence = verify_licence(doc, list(self.config.issuer_public_keys))
        except LicenceError as err:
            raise StartupError(
                f"stored licence {doc.get('license_id', '?')} failed verification: {err.message}. "
                "Fix license.issuer_public_keys in the agent config or install a valid licence."
            ) from None

    @property
    def licence(self) -> Licence | None:
        if self._licence is None:
            doc = repo.get_meta(self.db.read(), "license")
            if doc is not None:
                self._licence = verify_licence(doc, list(self.config.issuer_public_keys))
        return self._licence

    def set_licence(self, lic: Licence) -> None:
        self._licence = lic

    def licence_state(self) -> LicenceState:
        """Licence state at the agent's notion of now, which never moves backwards.

        The furthest time seen is persisted, so setting the clock back (or restarting) cannot
        turn a read-only licence writable again.
        """
        now = self.clock()
        with self._lock:
            seen_text = repo.get_meta(self.db.read(), "license_clock")
            seen = parse_rfc3339(seen_text) if seen_text else None
            if seen is not None and seen > now:
                now = seen
            elif seen is None or (now - seen).total_seconds() > 60:
                with self.db.write() as tx:
                    repo.set_meta(tx, "license_clock", to_rfc3339(now))
        lic = self.licence
        if lic is None:
            raise StartupError("no licence installed")
        return licence_state(lic, now)

    # -- cluster ---------------------------------------------------------------------------------
    def adopt_cluster_id(self, other: str | None) -> None:
        """Two clusters that merge keep the older (smaller) cluster id, on every peer."""
        if not isinstance(other, str) or not other.startswith("clu_"):
            return
        with self._lock:
            cluster = self.cluster()
            if cluster and other < cluster.get("cluster_id", other):
                with self.db.write() as tx:
                    repo.set_meta(tx, "cluster", cluster | {"cluster_id": other})
                log.info("adopted older cluster id", cluster_id=other, previous=cluster.get("cluster_id"))

    def gossip_soon(self) -> None:
        if self.gossiper is not None:
            self.gossiper.poke()

    # -- status hooks (filled in by replication / data plane supervisors) ----------------------
    def readiness_checks(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        for provider in self._readiness:
            checks.update(provider())
        return checks

    def add_readiness(self, provider: Callable[[], dict[str, str]]) -> None:
        self._readiness.append(provider)

    def fresh_dataplane_stats(self) -> dict:
        """The data plane's counters (``arctic.dataplane.stats``); {} without a data plane or when they are stale
        (a hung data plane must not look healthy)."""
        if self.dataplane_stats is None:
            return {}
        stats = self.dataplane_stats()
        if time.time() - float(stats.get("updated_at") or 0) > SESSION_STATS_FRESH:
            return {}
        return stats

    def peer_sessions(self) -> dict[str, dict]:
        """Per peer, the data plane's sessions with it (state, RTT, streams, reconnects); {} when no fresh stats."""
        return self.fresh_dataplane_stats().get("peers") or {}

    def peer_status(self, local_hash: str) -> list[dict]:
        """Per-peer liveness as this agent sees it (local observations, not replicated)."""
        conn = self.db.read()
        health = {r["peer_id"]: r for r in conn.execute("SELECT * FROM peer_health").fetchall()}
        sessions = self.peer_sessions()
        out = []
        for p in repo.list_peers(conn):
            h = health.get(p.id)
            reachable = True if p.is_local else (None if h is None or h["reachable"] is None else bool(h["reachable"]))
            out.append({"peer_id": p.id, "name": p.name, "address": p.address, "is_local": p.is_local,
                        "state": p.state, "reachable": reachable,
                        "last_seen": None if p.is_local or h is None else h["last_seen"],
                        "registry_hash": local_hash if p.is_local else (h["registry_hash"] if h else None),
                        "last_error": None if p.is_local or h is None else h["last_error"],
                        "session": None if p.is_local else sessions.get(p.id)})
        return out
