"""A session: one authenticated connection between two peers that carries many streams (``frames`` format).

Opened once (``handshake``) and kept, so a new intercepted connection costs one OPEN frame instead of a TCP
and TLS handshake and a signature. The session is an asyncio protocol over any byte-stream transport (TCP,
TLS over TCP, KCP over UDP: ``transports``); it does not know which.

What it does:

* **Framing** in and out. Outgoing frames of one loop iteration are written together (one ``writelines``: one
  syscall and, over TLS, one batch of records). Incoming DATA is handed to its stream in place: a memoryview of
  the bytes just read, never copied, even when a frame spans reads.
* **Flow control** per stream (``Stream``): a sender may have at most the receiver's window in flight, the
  receiver gives credit back (WINDOW) as its local socket takes the bytes. A slow reader therefore fills only
  its own window: the session keeps reading and other streams keep flowing, and memory stays bounded.
* **Fair scheduling**: while the session's transport is congested, streams with data wait in a round-robin
  queue and each gets ``QUANTUM`` bytes per turn when it drains (deficit round robin with a fixed quantum).
* **Control-frame authentication** in ``encryption: none`` (``handshake.ControlMac``); a bad MAC ends the
  session, because only an attacker on the link can cause it.
* **Keepalive and RTT**: a PING every ``keepalive`` seconds (echoed as PONG) measures the round trip; three
  intervals without a byte from the peer end the session, and its owner opens a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from . import frames
from .frames import (
    DATA,
    FIN,
    GOAWAY,
    HEADER,
    HEADER_SIZE,
    MAX_CONTROL,
    MOVE,
    MOVED,
    OK,
    OPEN,
    PING,
    PONG,
    REFUSE,
    RST,
    WINDOW,
    FrameError,
)
from .handshake import MAC_SIZE, ControlMac

if TYPE_CHECKING:
    from .streams import Stream

QUANTUM = 64 * 1024  # bytes a waiting stream may send per round-robin turn
WRITE_HIGH = 1024 * 1024  # session transport buffer above which streams wait (uvloop pause_writing)
WRITE_LOW = 256 * 1024
BACKLOG_SECONDS = 0.02  # a limited session holds at most this long of unsent bytes at its rate, in each buffer
BACKLOG_FLOOR = 64 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
MAX_STREAM_ID = (1 << 31) - 1  # a session that used this many ids takes no more (its owner opens a fresh one)
DEAD_AFTER_TICKS = 3
COALESCE_BELOW = 16 * 1024  # pieces smaller than a TLS record are joined before they go to TLS


def coalesce(out: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Join runs of small pieces (headers, control frames) and leave big payloads alone.

    Over TLS each piece handed to the transport becomes at least one record: joining everything would copy every
    payload once more, not joining would make a record of every 8-byte header. Plain TCP needs neither
    (``writelines`` is one ``writev``).
    """
    result: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for piece in out:
        if len(piece) < COALESCE_BELOW:
            small.append(piece)
            continue
        if small:
            small.append(piece[:0])  # keep order: flush the small run first
            result.append(b"".join(small))
            small = []
        result.append(piece)
    if small:
        result.append(b"".join(small))
    return result


class SessionOwner(Protocol):
    """Who opened or accepted the session: told when it ends, and (target side) asked to open streams."""

    def session_closed(self, session: Session, reason: str) -> None: ...

    def stream_requested(self, session: Session, stream_id: int, opening: frames.Open) -> None: ...

    def lane_moved(self, session: Session, stream: Stream, lane_id: int) -> None: ...


class Session(asyncio.Protocol):
    def __init__(self, *, owner: SessionOwner, role: str, local_peer_id: str, peer_id: str, service_id: str,
                 slot: int, token: bytes, mac: ControlMac | None, window: int, peer_window: int, max_window: int,
                 transport_name: str, encrypted: bool, keepalive: float, lane_key: bytes = b"",
                 log: Any = None) -> None:
        self.owner = owner
        self.role = role  # "client" (we opened it: source side) or "server"
        self.local_peer_id = local_peer_id
        self.peer_id = peer_id
        self.service_id = service_id
        self.slot = slot
        self.token = token
        self.lane_key = lane_key
        self.mac = mac
        self.window = window  # what we let the peer have in flight per new stream (each stream may grow it)
        self.max_window = max(window, max_window)
        self.peer_window = peer_window  # what the peer lets us have in flight per stream
        self.transport_name = transport_name
        self.encrypted = encrypted
        self.keepalive = keepalive
        self.log = log
        self.streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_event_loop()
        self.created = time.time()
        self.closed = False
        self.close_reason = ""
        self.going_away = False  # GOAWAY received (or sent): no new streams here
        self.next_stream_id = 1
        self.last_opened_id = 0  # server side: ids must grow
        self.streams_total = 0
        self.bytes_in = self.bytes_out = 0
        self.rtt: float | None = None  # seconds, smoothed
        self.priority = 0  # SO_PRIORITY of its socket (its QoS slot)
        self.write_high = WRITE_HIGH  # bytes the transport may hold before streams wait (see bound_backlog)
        self.limited = False  # its service has a bandwidth limit (set with bound_backlog)
        self.group: Any = None  # source side: the SessionGroup that dialed it
        self.idle_since: float | None = None
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._paused = False
        self._waiting: collections.deque[Stream] = collections.deque()
        self._partial = b""
        self._data_sid = 0
        self._data_left = 0
        self._idle_ticks = 0
        self._timer: asyncio.TimerHandle | None = None
        self._notsent_lowat = 0

    def __repr__(self) -> str:
        return f"Session({self.role} {self.peer_id} {self.service_id} slot {self.slot}, {len(self.streams)} streams)"

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def attach(self, transport: asyncio.Transport, leftover: bytes = b"") -> None:
        """Take over ``transport`` after the handshake; ``leftover`` = bytes read past the handshake's end."""
        self.transport = transport
        transport.set_write_buffer_limits(high=self.write_high, low=self.write_high // 4)
        transport.set_protocol(self)
        self._timer = self.loop.call_later(self.keepalive, self._tick)
        self.send_control(PING, 0, frames.encode_u64(time.monotonic_ns()))  # an RTT right away, for the status
        if leftover:
            self.data_received(leftover)

    @property
    def grow_within(self) -> float:
        """A stream that used a quarter of its window within this many seconds grows its window."""
        return 2 * max(self.rtt or 0.001, 0.001)

    @property
    def accepting_streams(self) -> bool:
        return not (self.closed or self.going_away or self.next_stream_id > MAX_STREAM_ID)

    def close(self, reason: str, *, abort: bool = False) -> None:
        """End the session: every stream it carries is reset locally; the owner hears why."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            stream.session_lost(reason)
        self.streams.clear()
        self._waiting.clear()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                out, self._out = self._out, []
                if out:
                    self.transport.writelines(coalesce(out) if self.encrypted else out)
                self.transport.close()
        self.owner.session_closed(self, reason)

    def go_away(self, reason: str) -> None:
        """Tell the peer to open no more streams here (drain); the ones open continue."""
        if not self.going_away and not self.closed:
            self.going_away = True
            self.send_control(GOAWAY, 0, reason.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(f"connection lost: {exc}" if exc else "closed by the peer")

    def eof_received(self) -> bool:
        return False  # the peer ended the session: connection_lost follows

    def _tick(self) -> None:
        if self.closed:
            return
        self._idle_ticks += 1
        if self._idle_ticks > DEAD_AFTER_TICKS:
            self.close(f"no answer from the peer for {DEAD_AFTER_TICKS * self.keepalive:g} s", abort=True)
            return
        self.send_control(PING, 0, frames.encode_u64(time.monotonic_ns()))
        self._timer = self.loop.call_later(self.keepalive, self._tick)

    # --- streams -----------------------------------------------------------------------------------------------

    def open_stream(self, stream: Stream, opening: frames.Open) -> int:
        """Source side: register ``stream`` and send its OPEN; returns the stream id."""
        sid = self.next_stream_id
        self.next_stream_id += 2
        self.streams[sid] = stream
        self.streams_total += 1
        self.send_control(OPEN, sid, frames.encode_open(opening))
        return sid

    def accept_stream(self, stream: Stream, sid: int) -> None:
        """Target side: ``stream`` now owns id ``sid`` (its OPEN was admitted)."""
        self.streams[sid] = stream
        self.streams_total += 1

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)

    # --- sending -----------------------------------------------------------------------------------------------

    @property
    def can_send(self) -> bool:
        return not self._paused and self._out_bytes < self.write_high and not self.closed

    def bound_backlog(self, limit_mbps: int) -> None:
        """Keep what waits to be sent to ~20 ms at the service's limit (TCP sessions of limited services).

        A stream's bytes that reached the session's buffers cannot be taken back when the stream is reset: they
        drain at the limit first. With the default buffers (1 MiB here, the kernel's send buffer of up to 4 MiB)
        that is seconds at 10 Mbit/s, during which the slot's next stream waits and gets nothing. So the
        transport's high-water mark and the socket's ``TCP_NOTSENT_LOWAT`` (the kernel takes no more while this
        much is unsent) follow the limit; an unlimited session keeps the defaults, which bulk throughput needs.
        """
        self.limited = limit_mbps > 0
        if self.transport_name != "tcp":
            return  # KCP paces at the limit itself (transports/kcp.py)
        budget = max(BACKLOG_FLOOR, int(limit_mbps * 1_000_000 / 8 * BACKLOG_SECONDS)) if limit_mbps > 0 else 0
        high = min(budget, WRITE_HIGH) if budget else WRITE_HIGH
        if high == self.write_high and self.transport is not None and budget == self._notsent_lowat:
            return
        self.write_high, self._notsent_lowat = high, budget
        if self.transport is None:
            return
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # 0 = the host's default (unlimited)
                sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, budget)

    def send_data(self, sid: int, data: bytes | memoryview) -> None:
        n = len(data)
        self._out.append(HEADER.pack((DATA << 24) | n, sid))
        self._out.append(data)
        self._out_bytes += n + HEADER_SIZE
        self._schedule_flush()

    def send_control(self, ftype: int, sid: int, payload: bytes = b"") -> None:
        if self.closed:
            return
        if self.mac is None:
            self._out.append(HEADER.pack((ftype << 24) | len(payload), sid) + payload)
        else:
            body = HEADER.pack((ftype << 24) | (len(payload) + MAC_SIZE), sid) + payload
            self._out.append(body + self.mac.seal(body))
        self._out_bytes += HEADER_SIZE + len(payload)
        self._schedule_flush()

    def wait_to_send(self, stream: Stream) -> None:
        """``stream`` has data but no room now: it gets a turn in the round robin (at once if the session can
        take more)."""
        if not stream.waiting:
            stream.waiting = True
            self._waiting.append(stream)
        if not self._paused:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Once per loop iteration: give waiting streams their turns, then write everything in one go."""
        self._flush_scheduled = False
        if self.transport is None or self.closed:
            return
        if self._waiting and not self._paused:
            self._serve_waiting()
        if self._out:
            out, self._out = self._out, []
            self.bytes_out += self._out_bytes
            self._out_bytes = 0
            self.transport.writelines(coalesce(out) if self.encrypted else out)
        if self._waiting and not self._paused:
            self._schedule_flush()  # more turns in the next iteration, after other protocols had theirs

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        """Round robin: each waiting stream sends up to QUANTUM, then goes to the back if it has more."""
        waiting = self._waiting
        for _ in range(len(waiting)):
            if not self.can_send:
                return
            stream = waiting.popleft()
            stream.waiting = False
            if stream.pump(QUANTUM):
                self.wait_to_send(stream)

    # --- receiving -----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:  # noqa: C901 - the hot loop, kept in one piece on purpose
        self._idle_ticks = 0
        n = len(data)
        self.bytes_in += n
        view = memoryview(data)
        pos = 0
        if self._data_left:  # the rest of a DATA frame that began in an earlier read
            take = min(self._data_left, n)
            self._deliver(self._data_sid, view[:take])
            self._data_left -= take
            pos = take
        if self._partial:  # a header or control frame cut by the previous read: join (small)
            data = self._partial + bytes(view[pos:])
            self._partial = b""
            view = memoryview(data)
            n, pos = len(data), 0
        unpack = HEADER.unpack_from
        try:
            while n - pos >= HEADER_SIZE:
                word, sid = unpack(data, pos)
                ftype, length = word >> 24, word & 0xFFFFFF
                body = pos + HEADER_SIZE
                if ftype == DATA:
                    end = body + length
                    if end <= n:
                        if length:
                            self._deliver(sid, view[body:end])
                            if self.closed:
                                return
                        pos = end
                        continue
                    if n > body:
                        self._deliver(sid, view[body:n])
                    self._data_sid, self._data_left = sid, end - n
                    pos = n
                    break
                if length > MAX_CONTROL:
                    raise FrameError(f"{frames.NAMES[ftype] if ftype < len(frames.NAMES) else ftype} frame of "
                                     f"{length} bytes")
                end = body + length
                if end > n:
                    break
                if self.mac is not None:
                    if length < MAC_SIZE or not self.mac.verify(bytes(view[pos : end - MAC_SIZE]),
                                                                bytes(view[end - MAC_SIZE : end])):
                        raise FrameError("control frame MAC does not verify", "bad_mac")
                    payload = view[body : end - MAC_SIZE]
                else:
                    payload = view[body:end]
                pos = end
                self._control(ftype, sid, payload)
                if self.closed:
                    return
        except FrameError as err:
            if self.log is not None:
                self.log.warning("session protocol error: closing it", peer=self.peer_id, service=self.service_id,
                                 reason=err.reason, detail=str(err))
            self.close(err.reason, abort=True)
            return
        if pos < n:
            self._partial = bytes(view[pos:])

    def _deliver(self, sid: int, chunk: memoryview) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            stream.on_data(chunk)

    def _control(self, ftype: int, sid: int, payload: memoryview) -> None:
        if ftype == WINDOW:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.on_window(frames.decode_u32(payload))
        elif ftype == OPEN:
            if self.role != "server" or sid <= self.last_opened_id or not sid & 1:
                raise FrameError(f"OPEN with stream id {sid} out of order")
            self.last_opened_id = sid
            self.owner.stream_requested(self, sid, frames.decode_open(payload))
        elif ftype in (OK, FIN, RST, REFUSE, MOVE, MOVED):
            stream = self.streams.get(sid)
            if stream is None:
                return  # a stream that already ended here (e.g. a FIN racing a RST): nothing to do
            if ftype == OK:
                stream.on_ok()
            elif ftype == FIN:
                stream.on_fin()
            elif ftype == RST:
                stream.on_rst(frames.text(payload))
            elif ftype == REFUSE:
                stream.on_refuse(*frames.decode_refuse(payload))
            elif ftype == MOVE:
                self.owner.lane_moved(self, stream, frames.decode_u64(payload))
            else:
                stream.on_moved()
        elif ftype == PING:
            self.send_control(PONG, 0, bytes(payload))
        elif ftype == PONG:
            sample = (time.monotonic_ns() - frames.decode_u64(payload)) / 1e9
            if 0 <= sample < 600:
                self.rtt = sample if self.rtt is None else 0.875 * self.rtt + 0.125 * sample
        elif ftype == GOAWAY:
            self.going_away = True
            if self.log is not None:
                self.log.info("peer asked for no new streams on this session", peer=self.peer_id,
                              service=self.service_id, reason=frames.text(payload))
            if not self.streams and self.role == "client":
                self.close("peer going away")
        else:
            raise FrameError(f"unknown frame type {ftype}")

    # --- reporting -------------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        details = getattr(self.transport, "describe", None)  # KCP sessions tell more (srtt, FEC, drops)
        return {**({"kcp": details()} if callable(details) else {}),
            "peer": self.peer_id, "service": self.service_id, "slot": self.slot, "role": self.role,
            "state": "closed" if self.closed else ("draining" if self.going_away else "up"),
            "transport": self.transport_name, "encrypted": self.encrypted,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "streams": len(self.streams), "streams_total": self.streams_total,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "since": round(self.created, 3),
        }

