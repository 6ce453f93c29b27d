"""Per-event log throttling: a flood of refusals must not become a flood of log lines.

A data plane refuses connections at line rate when something is misconfigured (or under attack); one WARN line
per refusal would cost more CPU than the refusal itself and bury everything else in the journal. Each event name
gets ``burst`` lines per ``period``; the rest are counted and reported in one line when the period ends. The
stats file still counts every refusal.
"""

from __future__ import annotations

import time
from typing import Any


class ThrottledLog:
    def __init__(self, log: Any, *, burst: int = 10, period: float = 10.0) -> None:
        self.log = log
        self.burst = burst
        self.period = period
        self._window: dict[str, tuple[float, int, int]] = {}  # event -> (window start, lines, suppressed)

    def warning(self, event: str, msg: str, **fields: Any) -> None:
        now = time.monotonic()
        start, lines, suppressed = self._window.get(event, (now, 0, 0))
        if now - start >= self.period:
            if suppressed:
                self.log.warning("similar log lines suppressed", event=event, suppressed=suppressed,
                                 seconds=round(now - start, 1))
            start, lines, suppressed = now, 0, 0
        if lines < self.burst:
            self.log.warning(msg, **fields)
            lines += 1
        else:
            suppressed += 1
        self._window[event] = (start, lines, suppressed)
