"""``GET /metrics``: the agent in the Prometheus text format, through the official client library.

Everything is read at scrape time from where it already lives (the data plane's counters, the store, the gossip
health table, the licence, the reconcile worker), so there is no second copy of a counter to drift. One registry
per agent (``registry_of``), not the library's global one: tests run many agents in one process.

Cardinality stays flat: labels are services, peers, sections and refusal reasons, never client addresses or ports.
Naming follows the Prometheus conventions (``_total`` counters, base units: bytes and seconds).

Access (``metrics.auth`` in the agent config): ``loopback`` (default) answers 127.0.0.1/::1 without a token and
everyone else with a bearer token holding ``services.read``; ``token`` always wants the token; ``off`` answers
anyone who reaches the API port. A token comes from ``POST /v1/oauth/token``; Prometheus fetches and renews it
itself with its ``oauth2`` scrape setting (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from arctic import __version__
from arctic.api.endpoint import agent, authenticate, endpoint
from arctic.auth import scopes as scope_rules
from arctic.cluster.licence import LicenceError
from arctic.logs import get_logger
from arctic.runtime import StartupError
from arctic.store import repository as repo
from arctic.timeutil import parse_rfc3339

bp = Blueprint("metrics", __name__)
log = get_logger("api")

LICENSE_STATES = ("valid", "warning", "grace", "read_only", "suspended", "none")
SERVICE_LABELS = ("service_id", "service_name", "source_peer", "target_peer", "transport", "role")
PEER_LABELS = ("peer_id", "peer_name")
# Refusal reasons exported at 0 before the first one happens (``increase()`` needs the zero to see the first):
# the ones an operator acts on, per side. Other reasons appear once they occur.
FIRST_REFUSALS = {"source": ("target_refused", "target_connect_failed", "tunnel_connect_failed", "setup_timeout"),
                  "target": ("destination_not_routed", "connect_failed")}


def registry_of(runtime) -> CollectorRegistry:
    """The agent's own registry, made on first use with its collector in it."""
    registry = getattr(runtime, "metrics_registry", None)
    if registry is None:
        registry = runtime.metrics_registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(runtime))
    return registry


@bp.get("/metrics")
@endpoint("Prometheus metrics of this agent (text format 0.0.4)", scope=None, always=True, errors=(401, 403))
def metrics():
    runtime = agent()
    mode = runtime.config.metrics_auth
    if mode == "token" or (mode == "loopback" and not _from_loopback(request.remote_addr)):
        authenticate(scope_rules.SERVICES_READ)
    return Response(generate_latest(registry_of(runtime)), mimetype=CONTENT_TYPE_LATEST)


def _from_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class AgentCollector(Collector):
    """Reads the agent's state at scrape time and yields it as metric families."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        local = runtime.local_peer_id
        conn = runtime.db.read()
        peers = {p.id: p for p in repo.list_peers(conn)}
        names = {pid: p.name or pid for pid, p in peers.items()}
        info = GaugeMetricFamily("arctic_agent_info", "This agent: its peer id and name, and the software version",
                                 labels=("peer_id", "peer_name", "version"))
        info.add_metric((local or "", names.get(local or "", "") if local else "", __version__), 1)
        yield info
        stats = runtime.fresh_dataplane_stats()
        if local is not None:
            services = [s for s in repo.list_services(conn) if local in (s.source_peer_id, s.target_peer_id)]
            yield from self._services(services, local, names, stats)
            yield from self._peers(conn, [p for p in peers.values() if not p.is_local and p.is_member], stats)
        yield from self._licence()
        yield from self._dataplane(stats)
        worker = runtime.reconcile_worker
        if worker is not None:
            yield from worker.metrics.collect()

    # --- per service ---------------------------------------------------------------------------------------------

    def _services(self, services: Iterable, local: str, names: dict[str, str],
                  stats: dict[str, Any]) -> Iterator[Metric]:
        def family(kind: type, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return kind(name, doc, labels=(*SERVICE_LABELS, *extra))

        opened = family(CounterMetricFamily, "arctic_service_streams_opened",
                        "Connections (streams) of the service this peer relayed")
        open_now = family(GaugeMetricFamily, "arctic_service_streams_open", "Connections of the service open now")
        refused = family(CounterMetricFamily, "arctic_service_refused",
                         "Connections of the service refused, by reason", ("reason",))
        sent = family(CounterMetricFamily, "arctic_service_transmit_bytes",
                      "Bytes from local sockets into the tunnel (client to target on the source peer)")
        received = family(CounterMetricFamily, "arctic_service_receive_bytes",
                          "Bytes from the tunnel to local sockets")
        drops = family(CounterMetricFamily, "arctic_service_shaping_dropped_packets",
                       "Packets the service's bandwidth limit dropped on this peer")
        last = family(GaugeMetricFamily, "arctic_service_last_stream_timestamp_seconds",
                      "When the service's last connection opened on this peer")
        counted = stats.get("services") or {}
        shaping = self._shaping_drops()
        for svc in services:
            labels = (svc.id, svc.name or "", names.get(svc.source_peer_id, svc.source_peer_id),
                      names.get(svc.target_peer_id, svc.target_peer_id), svc.transport_type,
                      "source" if svc.source_peer_id == local else "target")
            counters = counted.get(svc.id) or {}
            opened.add_metric(labels, counters.get("source", 0) + counters.get("target", 0))
            open_now.add_metric(labels, counters.get("active", 0))
            counts = dict.fromkeys(FIRST_REFUSALS[labels[-1]], 0) | (counters.get("refused") or {})
            for reason, count in sorted(counts.items()):
                refused.add_metric((*labels, reason), count)
            sent.add_metric(labels, counters.get("bytes_to_tunnel", 0))
            received.add_metric(labels, counters.get("bytes_from_tunnel", 0))
            drops.add_metric(labels, shaping.get(svc.id, 0))
            if counters.get("last_stream_at"):
                last.add_metric(labels, counters["last_stream_at"])
        yield from (opened, open_now, refused, sent, received, drops, last)

    def _shaping_drops(self) -> dict[str, int]:
        worker = self.runtime.reconcile_worker
        if worker is None:
            return {}
        try:
            return worker.qos.drops()
        except Exception as err:  # noqa: BLE001 - a scrape must not fail because tc could not be read
            log.debug("shaping drops not read", error=str(err))
            return {}

    # --- per peer ------------------------------------------------------------------------------------------------

    def _peers(self, conn, peers: list, stats: dict[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily("arctic_peer_up", "1 when at least one data-plane session with the peer is up",
                               labels=PEER_LABELS)
        sessions = GaugeMetricFamily("arctic_peer_sessions", "Data-plane sessions with the peer, by state",
                                     labels=(*PEER_LABELS, "state"))
        rtt = GaugeMetricFamily("arctic_peer_rtt_seconds", "Round-trip time of the sessions with the peer (median)",
                                labels=PEER_LABELS)
        reconnects = CounterMetricFamily("arctic_peer_reconnects", "Sessions with the peer that had to reconnect",
                                         labels=PEER_LABELS)
        reachable = GaugeMetricFamily("arctic_peer_reachable", "1 when cluster gossip reaches the peer, 0 when it "
                                      "failed repeatedly (absent until known)", labels=PEER_LABELS)
        seen = GaugeMetricFamily("arctic_peer_last_seen_age_seconds", "Seconds since gossip last heard from the peer",
                                 labels=PEER_LABELS)
        health = {r["peer_id"]: r for r in conn.execute("SELECT peer_id, reachable, last_seen FROM peer_health")}
        by_peer = stats.get("peers") or {}
        now = time.time()
        for peer in peers:
            labels = (peer.id, peer.name or peer.id)
            session = by_peer.get(peer.id)
            if session is not None:
                up.add_metric(labels, 1 if session.get("sessions_up") else 0)
                sessions.add_metric((*labels, "up"), session.get("sessions_up", 0))
                sessions.add_metric((*labels, "connecting"),
                                    session.get("sessions", 0) - session.get("sessions_up", 0))
                if session.get("rtt_ms") is not None:
                    rtt.add_metric(labels, session["rtt_ms"] / 1000)
                reconnects.add_metric(labels, session.get("reconnects", 0))
            row = health.get(peer.id)
            if row is not None and row["reachable"] is not None:
                reachable.add_metric(labels, int(row["reachable"]))
            if row is not None and row["last_seen"]:
                seen.add_metric(labels, max(0.0, now - parse_rfc3339(row["last_seen"]).timestamp()))
        yield from (up, sessions, rtt, reconnects, reachable, seen)

    # --- licence, data plane -------------------------------------------------------------------------------------

    def _licence(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("arctic_license_state", "1 for the licence's current state, 0 for the others",
                                  labels=("state",))
        remaining = GaugeMetricFamily("arctic_license_remaining_seconds",
                                      "Seconds until the licence loses a capability (expiry, or the end of grace)")
        try:
            current = self.runtime.licence_state() if self.runtime.bootstrapped else None
        except (StartupError, LicenceError):
            current = None
        name = current.name if current is not None else "none"
        for each in LICENSE_STATES:
            state.add_metric((each,), 1 if each == name else 0)
        if current is not None and current.changes_at is not None:
            remaining.add_metric((), max(0.0, current.changes_at.timestamp() - time.time()))
        yield from (state, remaining)

    def _dataplane(self, stats: dict[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily("arctic_dataplane_up", "1 when the data plane runs and reports fresh counters")
        workers = GaugeMetricFamily("arctic_dataplane_workers", "Data-plane worker processes running")
        restarts = CounterMetricFamily("arctic_dataplane_worker_restarts",
                                       "Data-plane workers that died and were restarted")
        if self.runtime.dataplane_stats is not None:
            up.add_metric((), 1 if stats else 0)
            workers.add_metric((), stats.get("workers_running", 0))
            restarts.add_metric((), stats.get("worker_restarts", 0))
        yield from (up, workers, restarts)
