"""Counters the agent, ``jq`` and the tests read: a JSON file next to the config, rewritten every second.

Each worker counts its own streams and sessions (one event loop: no locks); the master process merges the
workers' snapshots (``merge``) and writes the file atomically. A file rather than a socket: the agent, operators
and tests read it with no client code. Counters start from zero when the data plane starts.

Per service: streams relayed as source and as target, open now, bytes each way, refusals by reason, when the last
stream opened. Bytes are live: a snapshot counts what open streams moved so far (a long transfer shows up as it
runs, so ``rate()`` over the exported counters is a throughput), and a closing stream hands its final count over
to the closed total. Per session: peer, service, slot, state, RTT, streams open and total, bytes; per peer
(merged): sessions up, reconnects, RTT, streams.
"""

from __future__ import annotations

import collections
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .streams import Stream

SIDES = ("source", "target")


def _service_counters() -> Counter:
    return Counter({"source": 0, "target": 0, "active": 0, "bytes_to_tunnel": 0, "bytes_from_tunnel": 0,
                    "last_stream_at": 0})


class Stats:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.active = Counter({s: 0 for s in SIDES})
        self.total = Counter({s: 0 for s in SIDES})
        self.relayed = Counter({s: 0 for s in SIDES})
        self.refusals: dict[str, Counter] = {s: Counter() for s in SIDES}
        self.bytes = Counter({"to_tunnel": 0, "from_tunnel": 0})
        self.services: dict[str, Counter] = {}
        self.service_refusals: dict[str, Counter] = {}
        self.handshakes = Counter({"full": 0, "resumed": 0})
        self.session_failures: Counter = Counter()  # why links failed to come up (reason -> count)
        self.lanes = Counter({"opened": 0, "failed": 0})
        self.sessions_accepted = 0  # target side: links that passed the handshake
        self.steered = 0  # target side: connections that asked for another worker (sent on, not refused)
        self.live: set[Stream] = set()  # relaying streams: their bytes so far count in the snapshot

    def service(self, service_id: str) -> Counter:
        counters = self.services.get(service_id)
        if counters is None:
            counters = self.services[service_id] = _service_counters()
        return counters

    def opened(self, side: str) -> None:
        self.active[side] += 1
        self.total[side] += 1

    def relaying(self, side: str, service_id: str, stream: Stream | None = None) -> None:
        counters = self.service(service_id)
        counters[side] += 1
        counters["active"] += 1
        counters["last_stream_at"] = int(time.time())
        if stream is not None:
            self.live.add(stream)

    def closed(self, side: str, *, to_tunnel: int = 0, from_tunnel: int = 0, service_id: str | None = None,
               relayed: bool = False, stream: Stream | None = None) -> None:
        self.live.discard(stream)  # type: ignore[arg-type]
        self.active[side] -= 1
        self.bytes["to_tunnel"] += to_tunnel
        self.bytes["from_tunnel"] += from_tunnel
        if relayed and service_id is not None:
            self.relayed[side] += 1
            counters = self.service(service_id)
            counters["active"] -= 1
            counters["bytes_to_tunnel"] += to_tunnel
            counters["bytes_from_tunnel"] += from_tunnel

    def refused(self, side: str, reason: str, service_id: str | None = None) -> None:
        self.refusals[side][reason] += 1
        if service_id is not None:
            self.service_refusals.setdefault(service_id, Counter())[reason] += 1

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for sid, counters in sorted(self.services.items()):
            services[sid] = dict(counters)
            services[sid]["refused"] = dict(self.service_refusals.get(sid, {}))
        for stream in self.live:  # what open streams moved so far (their final count lands in ``closed``)
            counters = services.get(stream.service_id or "?")
            if counters is not None:
                up, down = stream.relayed_bytes()
                counters["bytes_to_tunnel"] += up
                counters["bytes_from_tunnel"] += down
        for sid, refusals in self.service_refusals.items():
            services.setdefault(sid, dict(_service_counters()))["refused"] = dict(refusals)
        data: dict[str, Any] = {
            "active_connections": sum(self.active.values()),
            "total_connections": sum(self.total.values()),
            "relayed_connections": sum(self.relayed.values()),
            "refused": dict(sum(self.refusals.values(), Counter())),
            "bytes": dict(self.bytes),
            "by_side": {s: {"active": self.active[s], "total": self.total[s], "relayed": self.relayed[s],
                            "refused": dict(self.refusals[s])} for s in SIDES},
            "services": services,
            "tls_handshakes": dict(self.handshakes),
            "session_failures": dict(self.session_failures),
            "lanes": dict(self.lanes),
            "sessions_accepted": self.sessions_accepted,
            "steered": self.steered,
            "kcp_dropped": {},
        }
        data.update(extra)
        return data


# --- merging the workers' snapshots (master process) -----------------------------------------------------------------

_SUMMED = ("active_connections", "total_connections", "relayed_connections", "refused", "bytes", "by_side",
           "services", "tls_handshakes", "session_failures", "lanes", "sessions_accepted", "steered", "kcp_dropped")


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Counters add up; moments (``*_at``) take the latest."""
    for key, value in other.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        elif key.endswith("_at"):
            into[key] = max(into.get(key) or 0, value or 0)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value


def merge(workers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One view of every worker: counters summed, sessions listed, and a per-peer summary of the sessions."""
    merged: dict[str, Any] = {key: value for key, value in Stats().snapshot().items() if key in _SUMMED}
    sessions: list[dict[str, Any]] = []
    reconnects: Counter = Counter()
    for snap in workers:
        _add(merged, {k: snap[k] for k in _SUMMED if k in snap})
        for session in snap.get("sessions", []):
            sessions.append(dict(session, worker=snap.get("worker")))
        for peer, count in snap.get("reconnects", {}).items():
            reconnects[peer] += count
    merged["sessions"] = sessions
    merged["peers"] = peer_summary(sessions, reconnects)
    # reported_at: when each worker's counters were taken; the file is only as fresh as its oldest worker
    merged["workers"] = [{"worker": s.get("worker"), "pid": s.get("pid"), "reported_at": s.get("reported_at"),
                          "active_connections": s.get("active_connections", 0),
                          "sessions": len(s.get("sessions", []))} for s in workers]
    merged.update(extra)
    return merged


class RateMeter:
    """Each service's byte rate each way over the last few seconds, from the merged totals (master process).

    ``services list -o wide`` shows it; Prometheus computes its own rates from the counters.
    """

    WINDOW = 5.0  # seconds: long enough to smooth one-second reports, short enough to follow a transfer

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, dict[str, tuple[int, int]]]] = collections.deque()

    def add_rates(self, now: float, services: dict[str, dict[str, Any]]) -> None:
        """Set ``rate_to_tunnel`` and ``rate_from_tunnel`` (bytes/s) on each service's merged counters."""
        totals = {sid: (c.get("bytes_to_tunnel", 0), c.get("bytes_from_tunnel", 0)) for sid, c in services.items()}
        self._samples.append((now, totals))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.popleft()
        then, before = self._samples[0]
        elapsed = now - then
        for sid, (up, down) in totals.items():
            up_before, down_before = before.get(sid, (0, 0))
            rates = (max(0, up - up_before) / elapsed, max(0, down - down_before) / elapsed) if elapsed > 0 \
                else (0.0, 0.0)  # a restarted worker counts from zero again: never a negative rate
            services[sid]["rate_to_tunnel"], services[sid]["rate_from_tunnel"] = (round(r, 1) for r in rates)


def peer_summary(sessions: list[dict[str, Any]], reconnects: Counter) -> dict[str, dict[str, Any]]:
    """Per peer: are its sessions up, how many streams they carry, their RTT (median), reconnects so far."""
    peers: dict[str, dict[str, Any]] = {}
    rtts: dict[str, list[float]] = {}
    for session in sessions:
        peer = peers.setdefault(session["peer"], {"sessions": 0, "sessions_up": 0, "streams": 0,
                                                  "streams_total": 0, "reconnects": 0})
        peer["sessions"] += 1
        peer["sessions_up"] += session["state"] == "up"
        peer["streams"] += session["streams"]
        peer["streams_total"] += session["streams_total"]
        if session.get("rtt_ms") is not None:
            rtts.setdefault(session["peer"], []).append(session["rtt_ms"])
    for peer_id, count in reconnects.items():
        peers.setdefault(peer_id, {"sessions": 0, "sessions_up": 0, "streams": 0, "streams_total": 0,
                                   "reconnects": 0})["reconnects"] = count
    for peer_id, peer in peers.items():
        samples = rtts.get(peer_id)
        peer["rtt_ms"] = round(statistics.median(samples), 3) if samples else None
        peer["state"] = "up" if peer["sessions_up"] else ("connecting" if peer["sessions"] else "down")
    return peers


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
