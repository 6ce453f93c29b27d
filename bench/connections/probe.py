#!/usr/bin/env python3
"""Connection-rate probe: a greeting server and a bounded client, each a process of its own in a lab host.

    python probe.py serve   --ip 192.168.100.2 --port 9100 [--seconds 900]
    python probe.py connect --ip 192.168.100.2 --port 9100 [--count 3000] [--seconds 3] [--concurrency 16]

The server speaks first (a short greeting, then close), so the *time to first byte* at the client covers
everything a relay does before the server is reached: the client's connect, the interception, the tunnel or relay
set-up, the connect to the server and the way back. ``connect`` keeps ``--concurrency`` connections in flight
until ``--count`` have been started or ``--seconds`` have passed, and prints one JSON object: completed, errors,
elapsed, rate per second and TTFB p50/p90/p99/max in milliseconds.

Both sides are single-threaded epoll loops with non-blocking sockets, lean enough that the relay, not the probe,
is what limits the rate. The client reads to EOF before closing, so the server sends the first FIN and TIME_WAIT
stays on the server side (the client's ephemeral ports are not used up). Standard library only: it runs with
the project's Python inside a lab namespace (``ip netns exec``), so every socket belongs to the lab.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import selectors
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: probekit
from probekit import listening, percentile  # noqa: E402

GREETING = b"arctic-bench hello\n"
CONNECT_TIMEOUT = 5.0  # a connection that got no greeting by then counts as an error


def serve(ip: str, port: int, seconds: float) -> int:
    """Greet and close every connection, until ``seconds`` have passed (bounded: the lab also ends us)."""
    listener, sel = listening(ip, port, backlog=4096)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            continue
        for _ in range(256):  # drain the accept queue
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:  # EMFILE and friends: back off, do not spin
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.01)
                    break
                continue
            with contextlib.suppress(OSError):
                conn.send(GREETING)
            conn.close()
    return 0


class _Pending:
    __slots__ = ("sock", "started", "first_byte")

    def __init__(self, sock: socket.socket, started: float) -> None:
        self.sock, self.started, self.first_byte = sock, started, None


def connect(ip: str, port: int, count: int, seconds: float, concurrency: int, warmup: int) -> dict:
    """Open connections to ``ip:port`` as fast as they complete; the figures as a dict."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sel = selectors.DefaultSelector()
    ttfb: list[float] = []
    errors: dict[str, int] = {}
    started = done = 0
    pending: dict[int, _Pending] = {}

    def fail(p: _Pending, why: str) -> None:
        errors[why] = errors.get(why, 0) + 1
        sel.unregister(p.sock)
        pending.pop(p.sock.fileno(), None)
        p.sock.close()

    def start_one() -> bool:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        t0 = time.perf_counter()
        code = sock.connect_ex((ip, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            errors[errno.errorcode.get(code, str(code))] = errors.get(errno.errorcode.get(code, str(code)), 0) + 1
            return False
        p = _Pending(sock, t0)
        pending[sock.fileno()] = p
        sel.register(sock, selectors.EVENT_READ, p)
        return True

    def run(n: int, limit: float, record: bool) -> float:
        nonlocal started, done
        t_start = time.perf_counter()
        deadline = t_start + limit
        launched = 0
        last_done = t_start
        while True:
            now = time.perf_counter()
            while len(pending) < concurrency and launched < n and now < deadline:
                launched += 1
                if record:
                    started += 1
                start_one()
            if not pending:
                return last_done - t_start
            for key, _ in sel.select(timeout=0.2):
                p: _Pending = key.data
                try:
                    data = p.sock.recv(4096)
                except OSError as err:
                    fail(p, errno.errorcode.get(err.errno or 0, type(err).__name__))
                    continue
                now = time.perf_counter()
                if data and p.first_byte is None:
                    p.first_byte = now
                if not data:  # EOF: the server's FIN arrived; now close our side
                    if p.first_byte is None:
                        fail(p, "closed_without_data")
                        continue
                    sel.unregister(p.sock)
                    pending.pop(p.sock.fileno(), None)
                    p.sock.close()
                    if record:
                        ttfb.append(p.first_byte - p.started)
                        done += 1
                    last_done = now
            now = time.perf_counter()
            for p in [p for p in pending.values() if now - p.started > CONNECT_TIMEOUT]:
                fail(p, "timeout")

    if warmup:
        run(warmup, CONNECT_TIMEOUT, record=False)
        errors.clear()  # warm-up failures are not the measurement's
    elapsed = run(count, seconds, record=True)
    ms = [x * 1000 for x in ttfb]
    return {"started": started, "completed": done, "errors": errors, "elapsed_s": round(elapsed, 4),
            "rate_per_s": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "ttfb_ms": {"p50": round(percentile(ms, 50), 3), "p90": round(percentile(ms, 90), 3),
                        "p99": round(percentile(ms, 99), 3), "max": round(max(ms, default=0.0), 3)}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--ip", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, default=900)
    c = sub.add_parser("connect")
    c.add_argument("--ip", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, default=3000)
    c.add_argument("--seconds", type=float, default=3.0)
    c.add_argument("--concurrency", type=int, default=16)
    c.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.ip, args.port, args.seconds)
    result = connect(args.ip, args.port, max(1, args.count), max(0.1, args.seconds), max(1, args.concurrency),
                     max(0, args.warmup))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
