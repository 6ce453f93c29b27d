#!/usr/bin/env python3
"""Hold many idle TCP connections, from a process of its own in a lab host (standard library only).

    holdconns.py serve   --ip 192.168.100.2 --port 9300 --count 10000 [--seconds 120]
    holdconns.py connect --ip 192.168.100.2 --port 9300 --count 10000 [--seconds 120]

``serve`` accepts until ``--count`` connections are open and prints ``held N``; ``connect`` opens ``--count``
connections (at most 256 connecting at once) and prints ``connected N`` once every one is established. Both then
keep them open, idle, until their standard input closes (or ``--seconds`` pass), close them all and exit. A
process of its own because 10,000 sockets on each end would not fit in the test process's descriptor limit.
"""

from __future__ import annotations

import argparse
import errno
import resource
import selectors
import socket
import sys
import time

IN_FLIGHT = 256


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_for_stdin_close(deadline: float) -> None:
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5) and not sys.stdin.buffer.read1(4096):
            return


def serve(ip: str, port: int, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    listener = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((ip, port))
    listener.listen(4096)
    listener.settimeout(0.5)
    print("listening", flush=True)
    held: list[socket.socket] = []
    while len(held) < count and time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        held.append(conn)
    print(f"held {len(held)}", flush=True)
    _wait_for_stdin_close(deadline)
    for conn in held:
        conn.close()
    return 0 if len(held) == count else 1


def connect(ip: str, port: int, count: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sel = selectors.DefaultSelector()
    connected: list[socket.socket] = []
    pending = 0
    started = 0
    failures = 0
    while len(connected) + failures < count and time.monotonic() < deadline:
        while pending < IN_FLIGHT and started < count:
            sock = socket.socket(family)
            sock.setblocking(False)
            code = sock.connect_ex((ip, port))
            started += 1
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                failures += 1
                continue
            sel.register(sock, selectors.EVENT_WRITE)
            pending += 1
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            sel.unregister(sock)
            pending -= 1
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                sock.close()
                failures += 1
            else:
                connected.append(sock)
    print(f"connected {len(connected)}", flush=True)
    _wait_for_stdin_close(deadline)
    for sock in connected:
        sock.close()
    return 0 if len(connected) == count else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("serve", "connect"))
    parser.add_argument("--ip", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args(argv)
    _raise_fd_limit()
    run = serve if args.mode == "serve" else connect
    return run(args.ip, args.port, args.count, args.seconds)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
