"""What the benchmark probes share (standard library only: the probes run as plain scripts inside lab hosts)."""

from __future__ import annotations

import math
import selectors
import socket

TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100 (0.0 for no values): always a value that was measured."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def listening(ip: str, port: int, *, backlog: int, congestion: str | None = None,
              ) -> tuple[socket.socket, selectors.BaseSelector]:
    """A non-blocking listener on ``ip:port`` registered with a selector; prints ``ready`` for the harness, which
    waits for that line before it starts the load. ``congestion`` is inherited by the accepted sockets."""
    listener = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if congestion:
        listener.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, congestion.encode())
    listener.bind((ip, port))
    listener.listen(backlog)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    return listener, sel
