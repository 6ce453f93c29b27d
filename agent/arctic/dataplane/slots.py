"""Which QoS flow slot (``SO_PRIORITY``) a new tunnel connection takes: the least-used of its service's slots.

Each limited service has up to 16 HTB leaves (``arctic.netconf.qos``); HTB shares the service rate fairly between
*busy leaves*, so connections spread over the leaves share it fairly too. Picking the least-used slot (rather than
hashing) keeps the first 16 connections of a service on 16 different leaves. Counts live only in this process: a
restarted data plane starts from zero, which is harmless (existing sockets keep their priority).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence


class SlotPicker:
    def __init__(self) -> None:
        self._in_use: Counter[int] = Counter()
        self._lock = threading.Lock()

    def take(self, priorities: Sequence[int]) -> int:
        """The least-used of ``priorities`` (first one on a tie), now counted as used; 0 when there are none."""
        if not priorities:
            return 0
        with self._lock:
            chosen = min(priorities, key=lambda p: self._in_use[p])
            self._in_use[chosen] += 1
            return chosen

    def release(self, priority: int) -> None:
        if not priority:
            return
        with self._lock:
            self._in_use[priority] -= 1
            if self._in_use[priority] <= 0:
                del self._in_use[priority]
