"""Traffic probe for verify playbooks: a bounded one-port TCP server and a client, run inside lab hosts.

    probe.py serve PORT [--count N] [--timeout S]   answer up to N connections with {"peer": "<client addr>"}
    probe.py connect HOST PORT [--timeout S]        print the server's answer; exit 1 when nothing answers

The server exits after N connections or S seconds, whichever comes first, so a failed check leaves nothing
running. Addresses are the lab's; the playbooks run this only inside lab namespaces.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def serve(port: int, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    with socket.create_server(("0.0.0.0", port), reuse_port=False) as server:
        served = 0
        while served < count and (left := deadline - time.monotonic()) > 0:
            server.settimeout(left)
            try:
                conn, peer = server.accept()
            except TimeoutError:
                break
            with conn:
                conn.sendall(json.dumps({"peer": peer[0]}).encode() + b"\n")
            served += 1
    return 0


def connect(host: str, port: int, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            data = conn.makefile("rb").readline()
    except OSError as err:
        print(f"no answer from {host}:{port}: {err}", file=sys.stderr)
        return 1
    if not data:
        print(f"{host}:{port} closed without answering", file=sys.stderr)
        return 1
    sys.stdout.write(data.decode())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("connect")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    if args.mode == "serve":
        return serve(args.port, args.count, args.timeout)
    return connect(args.host, args.port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
