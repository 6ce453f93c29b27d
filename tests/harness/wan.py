"""A user-space WAN link emulator for the lab: delay, jitter, loss, bursty loss and a rate-limited bottleneck.

Why: the lab kernel has no netem (nor fq_codel/fq/sfq), so a WAN between two lab hosts has to be emulated in
user space. This module is both the emulator (run as its own process, stdlib only) and the client the tests use
to reconfigure it. ``harness.topologies.wan_transit`` builds the topology around it::

    with Lab(prefix="arcb") as lab:
        t = wan_transit(lab)                      # transit's roles and addresses, agent-a <-> agent-b via the WAN
        t.wan.set(delay_ms=50, jitter_ms=5, loss=0.05, rate_mbit=100)   # both directions ("both" is the default)
        t.wan.set("ba", delay_ms=70)              # "ab" is agent-a -> agent-b; only the parameters given change
        t.wan.stats()["ab"]                       # rx/tx, losses by cause, held packets, tun_dropped
        t.wan.clear()                             # a perfect link again

How packets get here
    The emulator runs inside a middle namespace that routes between the two sides. Policy routing sends every
    packet that arrives from side A (``ip rule iif eth-a lookup 100``; table 100 routes side B's prefixes
    ``dev tun-ab``) into a TUN device; the emulator reads it there, holds it, and writes it back into the same TUN
    device, where the kernel routes it on (by the main table) towards side B. Side B -> A uses ``tun-ba`` and
    table 101 the same way. One TUN device per direction, so the two directions are independent.

The model, per direction, in the order a packet meets it
    1. Gilbert-Elliott bursty loss: before each packet the state moves good->bad with ``ge_good_to_bad`` or
       bad->good with ``ge_bad_to_good``; in the bad state the packet is lost with ``ge_bad_loss`` (default 1).
       Mean burst length is 1/ge_bad_to_good; stationary loss ge_good_to_bad/(ge_good_to_bad+ge_bad_to_good)
       x ge_bad_loss.
    2. Random (Bernoulli) loss ``loss``.
    3. Bottleneck: ``rate_bytes`` (bytes/s of IP packet length, 0 = unlimited) serializes packets one after the
       other; a packet that would make the backlog exceed the queue is tail-dropped, as at a real bottleneck.
       The queue is ``queue_bytes`` if set, else ``queue_ms`` of the rate if set, else about one BDP: the rate x
       the base RTT (sum of both directions' delays), at least 20 ms of the rate and 16 full-size packets.
    4. Propagation: ``delay_ms`` plus jitter. By default jitter keeps order: the extra delay is a smooth random
       process, linear between points drawn uniformly from [-jitter_ms, +jitter_ms] every 4 x jitter_ms, so it
       changes by at most half a second per second and a later packet can never overtake an earlier one (a
       release time is also never earlier than the previous one's, which keeps order across reconfiguration).
       With ``reorder=True`` each packet draws its own uniform jitter, as netem does, and packets do reorder.
       The total delay never goes below zero.

Reconfiguration (control channel)
    A Unix stream socket (``--control PATH``, in the lab's run_dir), one JSON request line, one JSON reply
    line: ``{"op": "set", "direction": "ab"|"ba"|"both", "params": {...}, "reset": false}``, ``{"op": "get"}``,
    ``{"op": "stats"}``. ``set`` validates everything before it changes anything and applies to packets that
    arrive from then on: packets already held keep their schedule, so nothing in flight is dropped and the
    process is not restarted. ``WanLink`` below is the client.

Lifetime
    The harness starts it through ``Host.popen`` (so teardown ends it by pid) with ``--lifeline``: it also exits
    when its stdin pipe closes, i.e. when the test process that started it is gone. The TUN devices are
    persistent (created by the harness), so the routes that point at them survive an emulator restart.

Capacity (2-vCPU lab VM, Intel Xeon, kernel 6.18, Python 3.11; iperf3 agent-a -> agent-b, 8 s, 3 runs, median)
    0 delay:                      TCP 1.7 Gbit/s (bbr), 2.2 Gbit/s (cubic); range 1.6-2.4; emulator 70-100 % CPU.
    50 ms each way, default 4 MiB tcp_wmem: 249 (bbr) / 257 (cubic) Mbit/s, no drop anywhere, emulator 16 % CPU:
                                  the window bounds TCP there, not the emulator (2,700 packets held).
    50 ms each way, 64 MiB windows: ~0.9-1.1 Gbit/s with ~19,000 packets held; this is where it saturates (the
                                  TUN queue in front of it overflows: ``tun_dropped`` in ``stats()`` grows).
    UDP, 0 delay: ~185,000 packets/s of 64-byte datagrams, ~150,000/s of 1400-byte ones (1.7 Gbit/s): one read
                                  and one write syscall per packet is the cost, so packets, not bytes, count.
    If ``tun_dropped`` grows during a measurement, the emulator (not the emulated link) was the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import heapq
import json
import math
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the emulator process runs this file as a script, without the harness package
    from .lab import Host

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 65536  # more than any MTU: a short buffer would truncate a packet silently
READ_BATCH = 256  # packets read from one TUN per wakeup: batching without starving the other direction
WRITE_BATCH = 1024  # packets released per direction per loop turn, so a big release cannot stall reading
MIN_QUEUE_S = 0.020
MIN_QUEUE_BYTES = 16 * 1500
DIRECTIONS = ("ab", "ba")


# --- configuration --------------------------------------------------------------------------------------------

@dataclass
class LinkConfig:
    """One direction's impairments; see the module docstring for the model and the units."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: bool = False
    loss: float = 0.0
    ge_good_to_bad: float = 0.0
    ge_bad_to_good: float = 1.0
    ge_bad_loss: float = 1.0
    rate_bytes: float = 0.0
    queue_bytes: int = 0
    queue_ms: float = 0.0

    def updated(self, params: Mapping[str, Any]) -> LinkConfig:
        """A validated copy with ``params`` applied; ValueError (and no change) if any is wrong."""
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = asdict(self)
        for name, value in params.items():
            if name == "reorder":
                if not isinstance(value, bool):
                    raise ValueError(f"reorder must be true or false, not {value!r}")
                values[name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative ({value})")
            if name in ("loss", "ge_good_to_bad", "ge_bad_to_good", "ge_bad_loss") and value > 1:
                raise ValueError(f"{name} is a probability between 0 and 1, not {value}")
            values[name] = int(value) if name == "queue_bytes" else float(value)
        if values["ge_good_to_bad"] > 0 and values["ge_bad_to_good"] == 0:
            raise ValueError("ge_bad_to_good must be > 0 when ge_good_to_bad > 0 (the bad state would never end)")
        return LinkConfig(**values)


class SmoothJitter:
    """Extra delay that varies with time slowly enough that packets never overtake each other.

    Points are drawn uniformly from [-amplitude, +amplitude] every 4 x amplitude seconds and joined by straight
    lines, so the slope is at most 0.5: release = t + J(t) keeps growing with t.
    """

    def __init__(self, amplitude: float, rng: random.Random, start: float, value: float = 0.0) -> None:
        self.amplitude, self.rng = amplitude, rng
        self.period = 4 * amplitude
        self.t0, self.v0 = start, max(-amplitude, min(amplitude, value))
        self.t1, self.v1 = start + self.period, self._draw()

    def _draw(self) -> float:
        return self.rng.uniform(-self.amplitude, self.amplitude)

    def at(self, t: float) -> float:
        if self.amplitude == 0:
            return 0.0
        if t >= self.t1 + self.period:  # idle for a while: start a fresh segment from where we were
            self.t0, self.v0 = t, self.v1
            self.t1, self.v1 = t + self.period, self._draw()
        while t >= self.t1:
            self.t0, self.v0 = self.t1, self.v1
            self.t1, self.v1 = self.t1 + self.period, self._draw()
        return self.v0 + (self.v1 - self.v0) * (t - self.t0) / self.period


# --- the data path --------------------------------------------------------------------------------------------

class Direction:
    """One direction of the link: a TUN fd, its impairments, the packets it holds and its counters."""

    def __init__(self, name: str, tun: str, rng: random.Random) -> None:
        self.name, self.tun, self.rng = name, tun, rng
        self.fd = open_tun(tun)
        self.config = LinkConfig()
        self.queue_limit = float(MIN_QUEUE_BYTES)
        self.line: deque[tuple[float, bytes]] = deque()  # release-time ordered (order-keeping mode)
        self.heap: list[tuple[float, int, bytes]] = []  # reorder mode: (release, tiebreak, packet)
        self.last_release = 0.0
        self.busy_until = 0.0  # when the bottleneck finishes serializing what it has accepted
        self.bad = False  # Gilbert-Elliott state
        self.jitter = SmoothJitter(0.0, rng, time.monotonic())
        self.seq = 0
        self.held_bytes = 0
        self.counters = dict.fromkeys(
            ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "lost_random", "lost_burst", "dropped_queue",
             "write_errors", "max_held", "max_batch", "bursts"), 0)

    def configure(self, config: LinkConfig, base_rtt: float, now: float) -> None:
        old = self.config
        self.config = config
        if config.jitter_ms != old.jitter_ms:
            self.jitter = SmoothJitter(config.jitter_ms / 1000, self.rng, now, self.jitter.at(now))
        self.retune(base_rtt)

    def retune(self, base_rtt: float) -> None:
        """Recompute the queue limit (the automatic one follows the base RTT, which the other direction changes)."""
        c = self.config
        if c.queue_bytes:
            self.queue_limit = float(c.queue_bytes)
        elif c.queue_ms:
            self.queue_limit = max(c.rate_bytes * c.queue_ms / 1000, 1500.0)
        else:
            self.queue_limit = max(c.rate_bytes * max(base_rtt, MIN_QUEUE_S), float(MIN_QUEUE_BYTES))

    def held(self) -> int:
        return len(self.line) + len(self.heap)

    def next_due(self) -> float:
        due = math.inf
        if self.line:
            due = self.line[0][0]
        if self.heap and self.heap[0][0] < due:
            due = self.heap[0][0]
        return due

    def pump(self, now: float) -> None:
        """Read what the TUN has (up to READ_BATCH packets) and schedule or drop each one."""
        read, fd = os.read, self.fd
        packets = []
        try:
            for _ in range(READ_BATCH):
                packets.append(read(fd, READ_SIZE))
        except BlockingIOError:
            pass
        if packets:
            self.accept(now, packets)

    def accept(self, now: float, packets: list[bytes]) -> None:
        c, k = self.config, self.counters
        k["rx_packets"] += len(packets)
        k["max_batch"] = max(k["max_batch"], len(packets))
        delay = c.delay_ms / 1000
        if not (c.loss or c.ge_good_to_bad or c.rate_bytes or c.jitter_ms):  # the common fast path
            release = max(now + delay, self.last_release)
            self.last_release = release
            size = 0
            for p in packets:
                size += len(p)
                self.line.append((release, p))
            k["rx_bytes"] += size
            self.held_bytes += size
        else:
            for p in packets:
                k["rx_bytes"] += len(p)
                self._impair(now, p, c, delay)
        k["max_held"] = max(k["max_held"], self.held())

    def _impair(self, now: float, packet: bytes, c: LinkConfig, delay: float) -> None:
        rnd, k = self.rng.random, self.counters
        if c.ge_good_to_bad:
            if self.bad:
                if rnd() < c.ge_bad_to_good:
                    self.bad = False
            elif rnd() < c.ge_good_to_bad:
                self.bad = True
                k["bursts"] += 1
            if self.bad and rnd() < c.ge_bad_loss:
                k["lost_burst"] += 1
                return
        if c.loss and rnd() < c.loss:
            k["lost_random"] += 1
            return
        size = len(packet)
        depart = now
        if c.rate_bytes:
            start = self.busy_until if self.busy_until > now else now
            if (start - now) * c.rate_bytes + size > self.queue_limit:
                k["dropped_queue"] += 1
                return
            depart = self.busy_until = start + size / c.rate_bytes
        self.held_bytes += size
        if c.reorder:
            extra = self.rng.uniform(-c.jitter_ms, c.jitter_ms) / 1000 if c.jitter_ms else 0.0
            self.seq += 1
            heapq.heappush(self.heap, (depart + max(0.0, delay + extra), self.seq, packet))
            return
        release = depart + max(0.0, delay + self.jitter.at(depart))
        if release < self.last_release:
            release = self.last_release
        self.last_release = release
        self.line.append((release, packet))

    def flush(self, now: float) -> bool:
        """Write back up to WRITE_BATCH packets that are due; True if more are due already."""
        write, fd, line, heap = os.write, self.fd, self.line, self.heap
        sent = size = errors = error_bytes = 0
        while sent < WRITE_BATCH:
            if line and line[0][0] <= now and not (heap and heap[0][0] < line[0][0]):
                packet = line.popleft()[1]
            elif heap and heap[0][0] <= now:
                packet = heapq.heappop(heap)[2]
            else:
                break
            sent += 1
            size += len(packet)
            try:
                write(fd, packet)
            except OSError:  # e.g. a malformed packet the kernel refuses; count it, never stop the link
                errors += 1
                error_bytes += len(packet)
        if sent:
            k = self.counters
            k["tx_packets"] += sent - errors
            k["tx_bytes"] += size - error_bytes
            k["write_errors"] += errors
            self.held_bytes -= size
        return self.next_due() <= now

    def stats(self, now: float) -> dict[str, Any]:
        backlog = max(0.0, self.busy_until - now) * self.config.rate_bytes
        try:  # packets the kernel dropped because the TUN queue was full: the emulator could not keep up
            tun_dropped = int(Path(f"/sys/class/net/{self.tun}/statistics/tx_dropped").read_text())
        except (OSError, ValueError):
            tun_dropped = -1
        return {**self.counters, "held": self.held(), "held_bytes": self.held_bytes, "backlog_bytes": int(backlog),
                "queue_limit_bytes": int(self.queue_limit), "bad_state": self.bad, "tun_dropped": tun_dropped}


# --- the process ----------------------------------------------------------------------------------------------

def open_tun(name: str) -> int:
    """Attach to the (persistent) TUN device ``name`` in this namespace, non-blocking, without packet info."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Emulator:
    """One process, one thread, one epoll: both directions, the control socket and the lifeline."""

    def __init__(self, tuns: Mapping[str, str], control: Path, *, seed: int | None = None,
                 lifeline: bool = False) -> None:
        self.rng = random.Random(seed)
        self.directions = {name: Direction(name, tun, self.rng) for name, tun in tuns.items()}
        self.control_path = control
        with contextlib.suppress(FileNotFoundError):
            control.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.listener.bind(str(control))
        os.chmod(control, 0o600)
        self.listener.listen(16)
        self.epoll = select.epoll()
        self.by_fd = {d.fd: d for d in self.directions.values()}
        for fd in self.by_fd:
            self.epoll.register(fd, select.EPOLLIN)
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.lifeline = sys.stdin.fileno() if lifeline else -1
        if lifeline:
            self.epoll.register(self.lifeline, select.EPOLLIN | select.EPOLLHUP)
        self.started = time.monotonic()
        self.version = 0
        self.loops = 0
        self.running = True

    def base_rtt(self) -> float:
        return sum(d.config.delay_ms for d in self.directions.values()) / 1000

    def run(self) -> None:
        dirs = list(self.directions.values())
        by_fd, listener, lifeline = self.by_fd, self.listener.fileno(), self.lifeline
        poll, monotonic, fine_wait = self.epoll.poll, time.monotonic, select.select
        watched = [*by_fd, listener] + ([lifeline] if lifeline >= 0 else [])
        timeout: float | None = None
        while self.running:
            # epoll counts whole milliseconds, rounded up, so a release could be up to 1 ms late: wake up to 1 ms
            # early and wait the rest with select(), which counts microseconds and still wakes for arrivals
            # (an arrival is stamped when it is read, so the loop must never sleep past one).
            if timeout is None or timeout >= 0.002:
                events = poll(None if timeout is None else timeout - 0.001)
            else:
                if timeout > 0:
                    fine_wait(watched, [], [], timeout)
                events = poll(0)
            now = monotonic()
            self.loops += 1
            for fd, _ in events:
                d = by_fd.get(fd)
                if d is not None:
                    d.pump(now)
                elif fd == listener:
                    self.serve_control()
                elif fd == lifeline and not os.read(lifeline, 4096):
                    self.running = False
            busy = False
            for d in dirs:
                busy = d.flush(now) or busy
            if busy:
                timeout = 0.0
            else:
                due = min(d.next_due() for d in dirs)
                timeout = None if due == math.inf else max(0.0, due - monotonic())

    # control channel: small synchronous requests; a reply takes well under a millisecond
    def serve_control(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(2.0)
                try:
                    request = json.loads(_read_line(conn))
                    reply = self.handle(request)
                except (ValueError, TypeError, KeyError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                except OSError:
                    continue
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object such as {\"op\": \"stats\"}")
        op = request.get("op")
        now = time.monotonic()
        if op == "set":
            names = _directions(request.get("direction", "both"))
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError("params must be an object")
            base = LinkConfig() if request.get("reset") else None
            new = {n: (base or self.directions[n].config).updated(params) for n in names}  # validate all first
            for n, config in new.items():
                self.directions[n].configure(config, 0.0, now)
            rtt = self.base_rtt()
            for d in self.directions.values():
                d.retune(rtt)
            self.version += 1
        elif op == "stats":
            return {"ok": True, "pid": os.getpid(), "version": self.version, "uptime": now - self.started,
                    "loops": self.loops, "stats": {n: d.stats(now) for n, d in self.directions.items()}}
        elif op != "get":
            raise ValueError(f"unknown op {op!r}: use set, get or stats")
        return {"ok": True, "pid": os.getpid(), "version": self.version,
                "config": {n: asdict(d.config) for n, d in self.directions.items()}}


def _read_line(conn: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("request too long")
    return data


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ValueError(f"direction must be 'ab', 'ba' or 'both', not {direction!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="User-space WAN link emulator between two TUN devices.")
    parser.add_argument("--tun", action="append", required=True, metavar="DIR=NAME",
                        help="the TUN device of direction ab or ba, e.g. ab=tun-ab (give both)")
    parser.add_argument("--control", required=True, type=Path, help="Unix socket path for the control channel")
    parser.add_argument("--seed", type=int, default=None, help="seed the random generator (reproducible runs)")
    parser.add_argument("--lifeline", action="store_true", help="exit when stdin closes (the starter is gone)")
    args = parser.parse_args(argv)
    tuns = dict(item.split("=", 1) for item in args.tun)
    if sorted(tuns) != sorted(DIRECTIONS):
        parser.error("give --tun ab=NAME and --tun ba=NAME")
    emulator = Emulator(tuns, args.control, seed=args.seed, lifeline=args.lifeline)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    emulator.run()
    return 0


# --- the client side: start it, configure it, read its counters --------------------------------------------------

class WanError(RuntimeError):
    """The emulator refused a request or could not be reached; the message says why."""


class WanLink:
    """Talks to a running emulator over its control socket (from any namespace: it is a file-system socket)."""

    def __init__(self, control: Path, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
        self.control, self.process, self.log = Path(control), process, log

    @property
    def pid(self) -> int:
        return int(self.request({"op": "get"})["pid"])

    def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.control))
                sock.sendall(json.dumps(message).encode() + b"\n")
                reply = json.loads(_read_line(sock) or b"null")
            except (OSError, ValueError) as exc:
                raise WanError(f"emulator at {self.control} did not answer: {exc}{self._log_tail()}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise WanError(f"emulator refused {message!r}: {reply and reply.get('error')}")
        return reply

    def set(self, direction: str = "both", *, reset: bool = False, rate_mbit: float | None = None,
            **params: Any) -> dict[str, dict[str, Any]]:
        """Change impairments of ``direction`` ("ab": agent-a -> agent-b, "ba", or "both"), live.

        Only the parameters given change (``reset=True`` starts from a clean link). ``rate_mbit`` is a shortcut
        for ``rate_bytes`` (Mbit/s of IP packets). Returns the configuration of both directions afterwards.
        """
        if rate_mbit is not None:
            if "rate_bytes" in params:
                raise ValueError("give rate_mbit or rate_bytes, not both")
            params["rate_bytes"] = rate_mbit * 1e6 / 8
        _directions(direction)
        reply = self.request({"op": "set", "direction": direction, "params": params, "reset": reset})
        return reply["config"]

    def clear(self, direction: str = "both") -> dict[str, dict[str, Any]]:
        """Back to a perfect link (no delay, loss or limit)."""
        return self.set(direction, reset=True)

    def config(self) -> dict[str, dict[str, Any]]:
        return self.request({"op": "get"})["config"]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-direction counters: rx/tx packets and bytes, losses by cause, what is held now and at most."""
        return self.request({"op": "stats"})["stats"]

    def wait_read(self, direction: str, received: int, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``direction`` has read at least ``received`` packets in all (its counters then).

        A sender that waits for this every few hundred packets can never overflow the TUN device's queue in front
        of the emulator, however slow the machine: flow control on an event rather than on timing.
        """
        return self._wait(direction, lambda s: s["rx_packets"] >= received, f"{received} packets read", timeout)

    def wait_drained(self, direction: str, received: int, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``direction`` has read at least ``received`` packets in all and holds none; its counters.

        Writes into the TUN are delivered synchronously, so once this returns every packet the emulator let
        through is already in the receiver's socket buffer.
        """
        return self._wait(direction, lambda s: s["rx_packets"] >= received and s["held"] == 0,
                          f"{received} packets read and none held", timeout)

    def _wait(self, direction: str, done: Callable[[dict[str, Any]], bool], what: str,
              timeout: float) -> dict[str, Any]:
        _directions(direction)
        deadline = time.monotonic() + timeout
        while True:  # bounded polling of the emulator's own counters (each answer takes well under 1 ms)
            s = self.stats()[direction]
            if done(s):
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator direction {direction}: no {what} within {timeout}s: {s}")
            time.sleep(0.002)

    def _log_tail(self) -> str:
        if self.log is None:
            return ""
        try:
            tail = self.log.read_text(errors="replace")[-2000:].strip()
        except OSError:
            return ""
        return f"\nemulator log:\n{tail}" if tail else ""


def start_emulator(host: Host, tuns: Mapping[str, str], *, name: str = "wan", seed: int | None = None,
                   timeout: float = 15.0) -> WanLink:
    """Start the emulator as a tracked process of ``host`` (teardown ends it by pid) and wait until it is ready.

    ``tuns`` maps "ab" and "ba" to persistent TUN devices already in ``host``. The control socket and the log go
    to the lab's run_dir.
    """
    run_dir = Path(host.lab.run_dir)
    control, log = run_dir / f"{name}.sock", run_dir / f"{name}.log"
    argv: list[Any] = [sys.executable, "-I", str(Path(__file__).resolve()), "--control", control, "--lifeline"]
    for direction in DIRECTIONS:
        argv += ["--tun", f"{direction}={tuns[direction]}"]
    if seed is not None:
        argv += ["--seed", seed]
    with open(log, "ab") as err:
        proc = host.popen(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    link = WanLink(control, proc, log)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):  # wait for the ready line (an event), bounded in time
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            state = "exited" if proc.poll() is not None else f"not ready after {timeout}s"
            raise WanError(f"the WAN emulator in {host} {state}{link._log_tail()}")
        line += chunk
    proc.stdout.close()
    return link


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        print(f"wan emulator: {exc} ({errno.errorcode.get(exc.errno or 0, '?')})", file=sys.stderr)
        sys.exit(1)
