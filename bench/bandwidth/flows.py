"""Bulk TCP flows between lab hosts that carry an ``SO_PRIORITY``, the way Arctic's tunnel sockets do.

Used by ``bench/bandwidth`` and by ``tests/lab/test_qos_*.py``. Every socket is created inside a lab namespace
(through ``host.call``) and every thread that moves bytes is started from there, so no traffic ever involves the
root namespace. Flows are bounded in time (``max_seconds``) and stop on ``close()``.

A flow is one TCP connection from a client host to a ``FlowServer``. Direction ``up``: the client sends (its
socket carries the priority); ``down``: the server sends on the accepted socket (the priority is set there, as the
target peer's data plane does). Either way ``flow.counter`` counts the bytes that arrived.
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SO_PRIORITY = getattr(socket, "SO_PRIORITY", 12)
CHUNK = 256 * 1024
HEADER = struct.Struct("!cII")  # direction (b"U"/b"D"), priority for the server's socket, flow id
MAX_SECONDS = 120.0


@dataclass
class Counter:
    bytes: int = 0
    closed: bool = False

    def sample(self) -> tuple[float, int]:
        return time.monotonic(), self.bytes


def _spawn(target: Callable[..., Any], *args: Any, name: str) -> threading.Thread:
    """Started from a host.call worker, the thread lives in that host's namespace."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _send_loop(sock: socket.socket, stop: threading.Event, deadline: float) -> None:
    data = memoryview(bytes(CHUNK))
    sock.settimeout(0.2)
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                sock.send(data)
            except TimeoutError:
                continue
    except OSError:
        pass
    finally:
        _close(sock)


def _recv_loop(sock: socket.socket, counter: Counter, stop: threading.Event, deadline: float) -> None:
    buf = bytearray(CHUNK)
    sock.settimeout(0.2)
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                continue
            if n == 0:
                break
            counter.bytes += n
    except OSError:
        pass
    finally:
        counter.closed = True
        _close(sock)


def _close(sock: socket.socket) -> None:
    """Close with RST: data still queued in the socket must not keep flowing into the next measurement."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed during the flow header")
        data += chunk
    return data


class FlowServer:
    """Accepts flows on ``address:port`` inside ``host``; counts (``up``) or sends (``down``) per flow."""

    def __init__(self, host: Any, address: str, port: int, *, max_seconds: float = MAX_SECONDS) -> None:
        self.host, self.address, self.port = host, address, port
        self.stop = threading.Event()
        self.counters: dict[int, Counter] = {}
        self.deadline = time.monotonic() + max_seconds
        self._sock = host.call(self._listen)
        host.call(_spawn, self._accept_loop, name=f"flowsrv-{port}")

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(64)
        sock.settimeout(0.2)
        return sock

    def _accept_loop(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                conn.settimeout(5)
                direction, priority, flow_id = HEADER.unpack(_recv_exact(conn, HEADER.size))
            except (OSError, ConnectionError, struct.error):
                _close(conn)
                continue
            if direction == b"D":
                if priority:
                    conn.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, priority)
                _spawn(_send_loop, conn, self.stop, self.deadline, name=f"flowsrv-send-{flow_id}")
            else:
                counter = self.counters.setdefault(flow_id, Counter())
                _spawn(_recv_loop, conn, counter, self.stop, self.deadline, name=f"flowsrv-recv-{flow_id}")
        _close(self._sock)

    def close(self) -> None:
        self.stop.set()


_ids = itertools.count(1)


@dataclass
class Flow:
    """One connection; ``counter`` counts the bytes received at whichever end receives."""

    direction: str
    priority: int
    counter: Counter
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.stop.set()


def open_flow(host: Any, server: FlowServer, direction: str, priority: int = 0, *,
              connect_to: tuple[str, int] | None = None, max_seconds: float = MAX_SECONDS) -> Flow:
    """Connect from ``host`` to ``server`` and start moving bytes in ``direction`` ("up" or "down").

    ``connect_to`` dials a relay (e.g. an HAProxy frontend) that forwards to the server instead of the server.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    flow_id = next(_ids)
    deadline = min(server.deadline, time.monotonic() + max_seconds)

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if direction == "up" and priority:
            sock.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, priority)
        sock.settimeout(5)
        sock.connect(connect_to or (server.address, server.port))
        sock.sendall(HEADER.pack(b"U" if direction == "up" else b"D", priority if direction == "down" else 0,
                                 flow_id))
        return sock

    sock = host.call(connect)
    flow = Flow(direction, priority, Counter())
    if direction == "up":
        flow.counter = server.counters.setdefault(flow_id, Counter())
        host.call(_spawn, _send_loop, sock, flow.stop, deadline, name=f"flow-send-{flow_id}")
    else:
        host.call(_spawn, _recv_loop, sock, flow.counter, flow.stop, deadline, name=f"flow-recv-{flow_id}")
    return flow


def measure(flows: Sequence[Flow], seconds: float, *, warmup: float = 0.5) -> list[float]:
    """Goodput of each flow in Mbit/s over ``seconds``, after ``warmup`` seconds of letting them settle."""
    time.sleep(warmup)
    start = [f.counter.sample() for f in flows]
    time.sleep(seconds)
    end = [f.counter.sample() for f in flows]
    return [(b1 - b0) * 8 / (t1 - t0) / 1e6 for (t0, b0), (t1, b1) in zip(start, end, strict=True)]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when every flow got the same, 1/n when one got everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


_SENT = re.compile(r"Sent (\d+) bytes")


def class_bytes(host: Any, interface: str, classid: str) -> int:
    """Bytes HTB has sent from one class (frame bytes as the qdisc counts them, GSO segments included)."""
    out = host.run("tc", "-s", "class", "show", "dev", interface, "classid", classid).stdout
    match = _SENT.search(out)
    return int(match.group(1)) if match else 0


def stamped_class_bytes(host: Any, interface: str, classid: str) -> tuple[float, int]:
    """``class_bytes`` with the time it was read: the midpoint of the ``tc`` call, which itself takes tens of ms
    inside a namespace on a busy box (stamping before the call skews short windows by several per cent)."""
    before = time.monotonic()
    sent = class_bytes(host, interface, classid)
    return (before + time.monotonic()) / 2, sent


def measure_window(flows: list, host: Any, interface: str, classid: str, seconds: float) -> tuple[list[float], float]:
    """Goodput of each flow and the wire rate of one HTB class over the same window (Mbit/s)."""
    c0, w0 = [f.counter.sample() for f in flows], stamped_class_bytes(host, interface, classid)
    time.sleep(seconds)
    c1, w1 = [f.counter.sample() for f in flows], stamped_class_bytes(host, interface, classid)
    per_flow = [(b1 - b0) * 8 / (t1 - t0) / 1e6 for (t0, b0), (t1, b1) in zip(c0, c1, strict=True)]
    return per_flow, (w1[1] - w0[1]) * 8 / (w1[0] - w0[0]) / 1e6
