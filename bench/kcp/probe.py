#!/usr/bin/env python3
"""Small request/response latency probe: an echo server and a client that times each round trip.

    python probe.py serve --ip 192.168.100.3 --port 9400 [--cc cubic] [--seconds 3600]
    python probe.py ping  --ip 192.168.100.3 --port 9400 [--cc cubic] [--conns 4] [--seconds 4] [--size 64]

``ping`` keeps ``--conns`` connections, each sending a ``--size``-byte message and waiting for its echo before
sending the next, for ``--seconds``; it prints one JSON object: round trips, p50/p90/p99/max in milliseconds, and
errors. Such messages are what interactive traffic is made of: each one waits for a whole round trip, and a lost
packet costs what the transport needs to notice and repair it. ``--cc`` sets TCP_CONGESTION on the socket (the
plain-TCP rows use cubic or bbr on both ends). Standard library only; runs inside a lab namespace.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: probekit
from probekit import TCP_CONGESTION, listening, percentile  # noqa: E402


def _tune(sock: socket.socket, cc: str | None) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if cc:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, cc.encode())


def serve(ip: str, port: int, cc: str | None, seconds: float) -> int:
    listener, sel = listening(ip, port, backlog=256, congestion=cc)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                _tune(conn, cc)
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            try:
                conn.sendall(data)  # small messages: the send buffer takes them at once
            except OSError:
                sel.unregister(conn)
                conn.close()
    return 0


def ping(ip: str, port: int, cc: str | None, conns: int, seconds: float, size: int) -> dict:
    samples: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    message = b"x" * size

    def one() -> None:
        try:
            sock = socket.socket(socket.AF_INET)
            _tune(sock, cc)
            sock.settimeout(30)
            sock.connect((ip, port))
            with sock:
                while time.monotonic() < deadline:
                    start = time.perf_counter()
                    sock.sendall(message)
                    got = 0
                    while got < size:
                        chunk = sock.recv(size - got)
                        if not chunk:
                            raise ConnectionError("closed")
                        got += len(chunk)
                    with lock:
                        samples.append((time.perf_counter() - start) * 1000)
        except OSError as err:
            with lock:
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return {"round_trips": len(samples), "errors": errors,
            "ms": {"p50": round(percentile(samples, 50), 3), "p90": round(percentile(samples, 90), 3),
                   "p99": round(percentile(samples, 99), 3), "max": round(max(samples, default=0.0), 3)}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "ping"))
    parser.add_argument("--ip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cc", choices=("cubic", "bbr", "reno"))
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.ip, args.port, args.cc, args.seconds)
    print(json.dumps(ping(args.ip, args.port, args.cc, max(1, args.conns), max(0.5, args.seconds),
                          max(1, args.size))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
