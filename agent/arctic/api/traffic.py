"""A service's live traffic counters, as this peer's data plane counts them (``arctic.dataplane.stats``).

The source peer's counters are the service's: its data plane accepts the clients' connections, refuses the ones
no route admits, and sees the target's refusals. Counters start from zero when the data plane starts
(``counting_since``); the data plane outlives agent restarts, so they do too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from arctic.timeutil import to_rfc3339


def _moment(seconds: float | None) -> str | None:
    return to_rfc3339(datetime.fromtimestamp(seconds, UTC)) if seconds else None


class TrafficReader:
    """Reads the data plane's counters once per request; ``of`` then answers per service."""

    def __init__(self, runtime) -> None:
        self.local_peer_id = runtime.local_peer_id
        self.stats: dict[str, Any] = runtime.fresh_dataplane_stats()

    def of(self, service_id: str) -> dict[str, Any] | None:
        """The ``traffic`` object of a service; None when this peer has no running data plane to ask."""
        if not self.stats:
            return None
        counters = (self.stats.get("services") or {}).get(service_id) or {}
        refused = {reason: int(n) for reason, n in sorted((counters.get("refused") or {}).items())}
        return {
            "observed_by": self.local_peer_id,
            "counting_since": _moment(self.stats.get("started_at")),
            "connections_total": int(counters.get("source", 0) + counters.get("target", 0)),
            "connections_open": int(counters.get("active", 0)),
            "bytes_sent": int(counters.get("bytes_to_tunnel", 0)),
            "bytes_received": int(counters.get("bytes_from_tunnel", 0)),
            "throughput_sent_bps": round(8 * float(counters.get("rate_to_tunnel", 0))),
            "throughput_received_bps": round(8 * float(counters.get("rate_from_tunnel", 0))),
            "refused": refused,
            "refused_total": sum(refused.values()),
            "last_connection_at": _moment(counters.get("last_stream_at")),
        }
