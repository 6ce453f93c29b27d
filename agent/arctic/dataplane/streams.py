"""One stream: a relayed TCP connection, as one end of a session (``session``) and one local socket.

The same object serves both sides (one path for what used to be two connection handlers): at the source its
local socket is the intercepted client connection, at the target the connection to the real destination. It is
the asyncio protocol of that local socket and the session's handle for the stream, so a stream costs two small
objects (this one and the socket's transport), which keeps 10,000 idle streams cheap.

End of stream follows TCP, end to end:

* **half-close**: local EOF -> FIN frame (after every byte before it); FIN frame -> ``write_eof`` on the local
  socket after every byte before it. The other direction carries on. Both directions ended -> the local socket
  is closed and the stream forgotten.
* **reset**: a local reset or error -> RST frame; RST frame (or the session lost) -> the local socket is closed
  with RST (SO_LINGER 0), so the far end fails instead of seeing a clean end.

Flow control: ``credit`` is how much we may still send; the peer returns credit (WINDOW) as its local socket
takes the bytes. Received bytes are credited back once the kernel took them (the transport's buffer is empty:
its high-water mark is 0), so a slow reader holds at most one window in user space. The window starts small
(``stream_window``) and doubles, up to ``stream_window_max``, each time a quarter of it is used up within two
round trips while our socket keeps up: then the window, not the reader, is what limits the stream (the same
auto-tuning QUIC stacks do). A slow reader never grows its window.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Protocol

from . import frames, netsock

if TYPE_CHECKING:
    from .session import Session

NEW, WAITING, OPENING, CONNECTING, OPEN, CLOSED = range(6)
STATE_NAMES = ("new", "waiting", "opening", "connecting", "open", "closed")
LOCAL_WRITE_HIGH = 0  # paused while anything waits in the transport: credit only what the kernel took
LINGER_ZERO = struct.pack("ii", 1, 0)


class StreamHooks(Protocol):
    """The side (source or target) a stream belongs to."""

    def local_connected(self, stream: Stream) -> None: ...

    def stream_finished(self, stream: Stream, reset: str | None) -> None: ...

    def stream_refused(self, stream: Stream, reason: str, detail: str) -> None: ...

    def promote(self, stream: Stream) -> None: ...


class Stream(asyncio.Protocol):
    __slots__ = (
        "hooks", "session", "sid", "transport", "state", "service_id", "src", "dst", "slot", "credit", "out",
        "out_bytes", "reading_paused", "waiting", "unacked", "received", "window", "credited_at", "pending_in",
        "local_eof", "fin_sent", "lane_at",
        "remote_fin", "eof_written", "write_paused", "up", "down", "started", "connector", "refused_reason",
        "lane",
    )

    def __init__(self, hooks: StreamHooks) -> None:
        self.hooks = hooks
        self.session: Session | None = None
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.state = NEW
        self.service_id: str | None = None
        self.src: tuple[str, int] = ("?", 0)
        self.dst: tuple[str, int] = ("?", 0)
        self.slot = 0
        self.credit = 0
        self.out: collections.deque | None = None  # bytes waiting for credit or for the session
        self.out_bytes = 0
        self.reading_paused = False
        self.waiting = False  # in the session's round-robin queue
        self.unacked = 0  # bytes our socket took that the peer has not been credited for yet
        self.received = 0  # bytes the peer sent beyond what we credited (must stay within our window)
        self.window = 0  # what we let the peer have in flight (grows: see the module docstring)
        self.credited_at = 0.0
        self.pending_in: list | None = None  # target: bytes that arrived before the upstream connected
        self.local_eof = False
        self.fin_sent = False
        self.remote_fin = False
        self.eof_written = False
        self.write_paused = False
        self.up = 0  # bytes local socket -> session
        self.down = 0  # bytes session -> local socket
        self.started = time.monotonic()
        self.connector: asyncio.Task | asyncio.TimerHandle | None = None  # target: the connect; source: a wait
        self.refused_reason: str | None = None
        self.lane_at = 0  # bytes (both ways) after which the stream asks for a zero-copy lane; 0 = never
        self.lane: Any = None  # lanes.Move while it moves to a lane, then lanes.LaneRelay

    def __repr__(self) -> str:
        return f"Stream({self.sid} {STATE_NAMES[self.state]} {self.src}->{self.dst})"

    # --- binding to a session ------------------------------------------------------------------------------------

    def bind(self, session: Session, sid: int, state: int) -> None:
        self.session, self.sid, self.state = session, sid, state
        self.credit = session.peer_window
        self.window = session.window

    # --- the local socket (asyncio protocol) -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=LOCAL_WRITE_HIGH)  # type: ignore[attr-defined]
        self.hooks.local_connected(self)

    def data_received(self, data: bytes) -> None:
        self.up += len(data)
        if self.state == CLOSED:
            return
        session = self.session
        if session is not None and self.out is None and self.credit >= len(data) and session.can_send:
            self.credit -= len(data)
            session.send_data(self.sid, data)
        else:
            self._queue(data)  # no session yet (source waiting for one), no credit, or the session is congested
        if self.lane_at and self.up + self.down >= self.lane_at:
            self.lane_at = 0
            self.hooks.promote(self)

    def eof_received(self) -> bool:
        self.local_eof = True
        if self.session is not None and not self.out and self.state in (OPENING, OPEN):
            self._send_fin()
        return True  # keep the socket open for the other direction (half-close)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._credit_back(0)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED or self.transport is None:
            return  # ended already, or its socket moved to a lane (``lanes.detach``)
        if exc is None and self.fin_sent and self.eof_written:
            self._finish(None)
            return
        self._abort(f"local socket {'failed: ' + str(exc) if exc else 'closed'}", tell_peer=True, local_rst=False)

    # --- outgoing data: credit and the session's round robin -------------------------------------------------------

    def _resume_reading(self) -> None:
        """Read the local socket again, unless it was reset while paused: its unread bytes are then dropped, not
        relayed (``netsock.was_reset``). Only where they would cost: at a bandwidth limit, they drain at the
        limit; unlimited, they are gone in milliseconds, and the bulk path saves the syscall."""
        if not self.reading_paused or self.transport is None or self.state == CLOSED:
            return
        if self.session is not None and self.session.limited:
            sock = self.transport.get_extra_info("socket")
            if sock is not None and netsock.was_reset(sock):
                self._abort("local socket reset", tell_peer=True, local_rst=False)
                return
        self.reading_paused = False
        self.transport.resume_reading()

    def _queue(self, data: bytes | memoryview) -> None:
        if self.out is None:
            self.out = collections.deque()
        self.out.append(data)
        self.out_bytes += len(data)
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        if self.credit > 0 and self.session is not None:
            self.session.wait_to_send(self)

    def pump(self, budget: int) -> bool:
        """Send queued bytes within credit, ``budget`` and the session's room; True if more could go later."""
        session = self.session
        out = self.out
        if session is None or self.lane is not None:
            return False  # no session yet, or moving to a lane: what is queued goes there (``take_queued``)
        while out and self.credit > 0 and budget > 0 and session.can_send:
            chunk = out[0]
            n = min(len(chunk), self.credit, budget, frames.MAX_DATA)
            if n == len(chunk):
                out.popleft()
            else:
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                out[0], chunk = view[n:], view[:n]
            self.credit -= n
            self.out_bytes -= n
            budget -= n
            session.send_data(self.sid, chunk)
        if out:
            return self.credit > 0
        self.out = None
        self.out_bytes = 0
        self._resume_reading()
        if self.local_eof and not self.fin_sent and self.state in (OPENING, OPEN):
            self._send_fin()
        return False

    def _send_fin(self) -> None:
        self.fin_sent = True
        assert self.session is not None
        self.session.send_control(frames.FIN, self.sid)
        self._maybe_done()

    # --- incoming, from the session ----------------------------------------------------------------------------

    def on_data(self, chunk: memoryview) -> None:
        n = len(chunk)
        self.received += n
        if self.received > self.window:
            self.reset("the peer sent beyond its credit")
            return
        if self.state == CONNECTING or self.transport is None:
            if self.pending_in is None:
                self.pending_in = []
            self.pending_in.append(chunk)
            return
        self.down += n
        self.transport.write(chunk)
        self._credit_back(n)
        if self.lane_at and self.up + self.down >= self.lane_at:
            self.lane_at = 0
            self.hooks.promote(self)

    def _credit_back(self, n: int) -> None:
        self.unacked += n
        session = self.session
        if session is None or self.write_paused or self.remote_fin:
            return
        if self.unacked >= self.window >> 2:
            increment = self.unacked
            now = time.monotonic()
            if self.window < session.max_window and now - self.credited_at < session.grow_within:
                growth = min(self.window, session.max_window - self.window)
                self.window += growth
                increment += growth
            self.credited_at = now
            session.send_control(frames.WINDOW, self.sid, frames.encode_u32(increment))
            self.received -= self.unacked
            self.unacked = 0

    def on_window(self, increment: int) -> None:
        self.credit += increment
        if self.out and self.session is not None:
            if self.session.can_send and not self.waiting:
                if self.pump(1 << 30):
                    self.session.wait_to_send(self)
            else:
                self.session.wait_to_send(self)

    def on_ok(self) -> None:
        if self.state == OPENING:
            self.state = OPEN

    def on_refuse(self, reason: str, detail: str) -> None:
        self.refused_reason = reason
        self.hooks.stream_refused(self, reason, detail)
        self._abort(f"refused by the target: {reason}", tell_peer=False, local_rst=True)

    def on_fin(self) -> None:
        self.remote_fin = True
        if self.state == OPEN or (self.state == OPENING and self.transport is not None):
            self._write_eof()

    def on_rst(self, reason: str) -> None:
        self._abort(f"reset by the peer: {reason}", tell_peer=False, local_rst=True)

    def on_moved(self) -> None:
        if self.lane is not None:
            self.lane.on_moved()

    # --- moving to a lane (``lanes``) ----------------------------------------------------------------------------

    def pause_local(self) -> None:
        """Stop reading the local socket (its next bytes will travel on the lane)."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_local(self) -> None:
        """The move did not happen: carry on in the session."""
        if self.state == CLOSED:
            return
        if self.out:
            if self.session is not None:
                self.session.wait_to_send(self)
        else:
            self._resume_reading()
        if self.local_eof and not self.fin_sent and not self.out and self.state != CLOSED:
            self._send_fin()

    def take_queued(self) -> tuple[bytes, bool]:
        """What was read locally but not sent yet, and whether the local side ended after it (that FIN now
        travels on the lane)."""
        queued = b"".join(bytes(chunk) for chunk in self.out or ())
        self.out, self.out_bytes = None, 0
        eof = self.local_eof
        if eof:
            self.fin_sent = True
        return queued, eof

    def relayed_bytes(self) -> tuple[int, int]:
        """Bytes relayed so far (up, down), with what a lane spliced that is not in ``up``/``down`` yet."""
        up, down = self.lane.spliced() if self.lane is not None else (0, 0)
        return self.up + up, self.down + down

    def finish_on_lane(self, reset: str | None) -> None:
        """The lane relay ended (both ways, or reset)."""
        if self.state != CLOSED:
            self.state = CLOSED
            self.hooks.stream_finished(self, reset)

    def session_lost(self, reason: str) -> None:
        self.session = None
        self._abort(f"session lost: {reason}", tell_peer=False, local_rst=True)

    # --- target: the upstream connection is up ---------------------------------------------------------------------

    def upstream_ready(self) -> None:
        """Target side: deliver what arrived while connecting, answer OK, apply an early FIN."""
        self.state = OPEN
        assert self.session is not None and self.transport is not None
        self.session.send_control(frames.OK, self.sid)
        pending, self.pending_in = self.pending_in, None
        for chunk in pending or ():
            self.down += len(chunk)
            self.transport.write(chunk)
            self._credit_back(len(chunk))
        if self.remote_fin:
            self._write_eof()

    # --- ending ----------------------------------------------------------------------------------------------------

    def _write_eof(self) -> None:
        if self.eof_written or self.transport is None:
            return
        self.eof_written = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.fin_sent and self.eof_written and self.state != CLOSED:
            if self.transport is not None:
                self.transport.close()
            self._finish(None)

    def reset(self, reason: str) -> None:
        """Abort the stream both ways (RST to the peer and to the local socket)."""
        self._abort(reason, tell_peer=True, local_rst=True)

    def drop(self, reason: str, *, local_rst: bool) -> None:
        """End the stream without telling the peer (it was refused, or never reached it)."""
        self._abort(reason, tell_peer=False, local_rst=local_rst)

    def _abort(self, reason: str, *, tell_peer: bool, local_rst: bool) -> None:
        if self.state == CLOSED:
            return
        if tell_peer and self.session is not None and not self.session.closed and self.sid:
            self.session.send_control(frames.RST, self.sid, reason.encode("utf-8", "replace")[:200])
        if self.connector is not None:
            self.connector.cancel()
        if self.transport is not None:
            if local_rst:
                reset_transport(self.transport)
            else:
                self.transport.abort()
        self._finish(reason)

    def _finish(self, reset: str | None) -> None:
        self.state = CLOSED
        if self.session is not None:
            self.session.forget(self.sid)
        self.out = None
        self.pending_in = None
        if self.lane is not None:  # a move in progress: stop it
            lane, self.lane = self.lane, None
            lane.close()
        self.hooks.stream_finished(self, reset)


def reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close a TCP transport with RST (SO_LINGER 0), so the other end sees a reset rather than a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    transport.abort()
