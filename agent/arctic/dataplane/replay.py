"""A bounded memory of recently seen header nonces, so a captured header cannot be played again.

Headers are only accepted within ``window`` seconds of their timestamp, so a nonce only needs remembering for
that long. The memory is bounded: when it is full, the entry with the oldest timestamp is forgotten and the
cache's *floor* rises to that timestamp; headers at or below the floor are then refused as if replayed. That
keeps the guarantee (no header is ever accepted twice) at the cost of refusing some old-but-valid headers under
extreme load, which only a misbehaving authenticated peer can cause.
"""

from __future__ import annotations

import heapq
import threading


class ReplayCache:
    def __init__(self, window_ms: int = 60_000, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._seen: set[bytes] = set()
        self._by_time: list[tuple[int, bytes]] = []  # min-heap of (timestamp_ms, nonce)
        self._floor_ms = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, nonce: bytes, timestamp_ms: int, now_ms: int) -> bool:
        """True (and remembered) if this nonce is new; False if seen before or not provably new."""
        with self._lock:
            self._expire(now_ms)
            if timestamp_ms <= self._floor_ms or nonce in self._seen:
                return False
            while len(self._seen) >= self.max_entries:
                ts, old = heapq.heappop(self._by_time)
                self._seen.discard(old)
                self._floor_ms = max(self._floor_ms, ts)
            if timestamp_ms <= self._floor_ms:
                return False
            self._seen.add(nonce)
            heapq.heappush(self._by_time, (timestamp_ms, nonce))
            return True

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        while self._by_time and self._by_time[0][0] < horizon:
            _ts, nonce = heapq.heappop(self._by_time)
            self._seen.discard(nonce)
