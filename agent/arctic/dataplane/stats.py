"""Counters the agent and the tests read: a JSON file next to the config, rewritten every second.

A file (written atomically with rename) rather than a socket: the agent, ``jq`` and tests can read it with no
client code. It describes the process named by its ``pid`` only; counters start from zero at every start.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SIDES = ("source", "target")


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started_at = time.time()
        self._active = Counter({s: 0 for s in SIDES})
        self._total = Counter({s: 0 for s in SIDES})
        self._refused: dict[str, Counter] = {s: Counter() for s in SIDES}
        self._relayed = Counter({s: 0 for s in SIDES})
        self._bytes = Counter({"to_tunnel": 0, "from_tunnel": 0})
        self._services: dict[str, Counter] = {}  # service id -> relays started per side, and active
        self._tls = Counter({"full": 0, "resumed": 0})  # tunnel handshakes accepted (target side)

    def opened(self, side: str) -> None:
        with self._lock:
            self._active[side] += 1
            self._total[side] += 1

    def closed(self, side: str, *, to_tunnel: int = 0, from_tunnel: int = 0, service_id: str | None = None) -> None:
        """A connection ended; ``service_id`` when it had been relayed for that service."""
        with self._lock:
            self._active[side] -= 1
            self._bytes["to_tunnel"] += to_tunnel
            self._bytes["from_tunnel"] += from_tunnel
            if service_id is not None:
                self._relayed[side] += 1
                self._service(service_id)["active"] -= 1

    def service_relay_started(self, side: str, service_id: str) -> None:
        """A connection of ``service_id`` is being relayed: which service carried it is visible per service."""
        with self._lock:
            counts = self._service(service_id)
            counts[side] += 1
            counts["active"] += 1

    def _service(self, service_id: str) -> Counter:
        """The counters of one service (caller holds the lock)."""
        return self._services.setdefault(service_id, Counter({"source": 0, "target": 0, "active": 0}))

    def tls_handshake(self, resumed: bool) -> None:
        with self._lock:
            self._tls["resumed" if resumed else "full"] += 1

    def refused(self, side: str, reason: str) -> None:
        with self._lock:
            self._refused[side][reason] += 1

    @property
    def active(self) -> int:
        with self._lock:
            return sum(self._active.values())

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {
                "pid": os.getpid(),
                "started_at": round(self.started_at, 3),
                "updated_at": round(time.time(), 3),
                "active_connections": sum(self._active.values()),
                "total_connections": sum(self._total.values()),
                "relayed_connections": sum(self._relayed.values()),
                "refused": dict(sum(self._refused.values(), Counter())),
                "bytes": dict(self._bytes),
                "by_side": {s: {"active": self._active[s], "total": self._total[s], "relayed": self._relayed[s],
                                "refused": dict(self._refused[s])} for s in SIDES},
                "services": {sid: dict(counts) for sid, counts in sorted(self._services.items())},
                "tls_handshakes": dict(self._tls),
            }
        data.update(extra)
        return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
