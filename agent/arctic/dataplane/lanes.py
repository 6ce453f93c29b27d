"""Zero-copy lanes: a bulk stream of a plaintext session moves onto a TCP connection of its own and is spliced.

Why: bytes inside a multiplexed session pass through Python (framing), which caps one stream at a few Gbit/s;
``os.splice`` between two sockets moves them in the kernel at close to the wire's speed. Streams start in the
session (a new connection costs one frame), and one that turns out to be bulk (``lane_threshold`` bytes, either
way) is moved; short connections never pay for a lane. TLS sessions keep their streams (there is no kernel TLS
here, so a lane would not be zero-copy).

The move, with the order of bytes kept in both directions:

1. The source stops reading the client and dials a lane to the target's tunnel port, on the worker that holds
   the session: ``LANE`` (session token, stream id, lane id, proof = BLAKE2b keyed with the session's lane key,
   so only the session's peer can attach a lane to its stream). The target answers ``LANE_OK`` and holds the
   lane; another worker answers ``REJECT wrong_worker`` and the source dials again.
2. The source writes what it still had queued for the stream onto the lane, then sends ``MOVE`` on the session:
   every upstream byte before it went through the session, every byte after it goes on the lane.
3. The target, on ``MOVE``: stops reading the destination, answers ``MOVED`` (after every downstream byte it
   sent in the session), waits until the destination socket took every session byte, then splices
   destination <-> lane.
4. The source, on ``MOVED``: waits until the client took every session byte, then splices client <-> lane.

A half-close that happened before the move carries over (the lane's direction is shut at once); a reset of
either socket resets the other side, as in the session. A lane that cannot be had leaves the stream in the
session. Lanes carry the session's SO_PRIORITY, so bandwidth limits apply to them as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

from . import frames, handshake, netsock
from .frames import MOVE, MOVED
from .splice import SplicePump
from .streams import CLOSED, OPEN, Stream

if TYPE_CHECKING:
    from .session import Session
    from .worker import Worker

_LANE = struct.Struct("!16sIQ16s")  # token, stream id, lane id, proof
STEER_ATTEMPTS = 32  # dials to reach the worker that holds the session
HOLD_SECONDS = 10.0  # a lane whose MOVE never comes is dropped after this long
DRAIN_POLL = 0.001  # while waiting for a socket's transport buffer to empty


def lane_message(session: Session, sid: int, lane_id: int) -> bytes:
    proof = handshake.lane_proof(session.lane_key, session.token, sid, lane_id)
    return handshake.message(handshake.LANE, _LANE.pack(session.token, sid, lane_id, proof))


def detach(transport: asyncio.BaseTransport) -> socket.socket:
    """Take the socket out of an asyncio transport, connection intact: a duplicate descriptor keeps it open
    while the transport closes its own (closing one of two descriptors sends nothing)."""
    fd = os.dup(transport.get_extra_info("socket").fileno())
    transport.abort()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


async def drained(transport: asyncio.WriteTransport, stream: Stream) -> bool:
    """Wait until ``transport`` wrote everything it buffered; False if the stream ended meanwhile."""
    while transport.get_write_buffer_size() and stream.state != CLOSED:
        await asyncio.sleep(DRAIN_POLL)
    return stream.state != CLOSED


class LaneRelay:
    """A stream on its lane: two splice pumps; the stream ends when both directions ended."""

    def __init__(self, lanes: Lanes, stream: Stream, local: socket.socket, lane: socket.socket, *,
                 up_done: bool, down_done: bool) -> None:
        self.lanes, self.stream, self.local, self.lane = lanes, stream, local, lane
        loop = lanes.worker.loop
        self.up = None if up_done else SplicePump(loop, local, lane, self._pump_done)
        self.down = None if down_done else SplicePump(loop, lane, local, self._pump_done)
        self.reset: str | None = None
        self.closed = False
        if up_done:
            with contextlib.suppress(OSError):
                lane.shutdown(socket.SHUT_WR)
        if down_done:
            with contextlib.suppress(OSError):
                local.shutdown(socket.SHUT_WR)

    def start(self) -> None:
        for pump in (self.up, self.down):
            if pump is not None:
                pump.start()
        self._maybe_done()

    def _pump_done(self, pump: SplicePump, error: BaseException | None) -> None:
        if error is not None:
            self.abort(f"{type(error).__name__}: {error}")
            return
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.closed:
            return
        if all(p is None or p.finished for p in (self.up, self.down)):
            self._close(None)

    def spliced(self) -> tuple[int, int]:
        """Bytes spliced each way (up, down) that ``_close`` has not added to the stream's counts yet."""
        if self.closed:
            return 0, 0
        return (self.up.counted if self.up else 0), (self.down.counted if self.down else 0)

    def abort(self, reason: str) -> None:
        """Reset both sockets (RST), as the session would for a reset stream."""
        if not self.closed:
            for sock in (self.local, self.lane):
                netsock.linger_zero(sock)
            self._close(reason)

    def _close(self, reset: str | None) -> None:
        self.closed = True
        for pump in (self.up, self.down):
            if pump is not None:
                pump.close()
        stream = self.stream
        if self.up is not None:
            stream.up += self.up.counted
        if self.down is not None:
            stream.down += self.down.counted
        for sock in (self.local, self.lane):
            with contextlib.suppress(OSError):
                sock.close()
        self.lanes.relays.discard(self)
        stream.lane = None
        stream.finish_on_lane(reset)

    def close(self) -> None:
        self.abort("closed")


class Move:
    """A stream on its way to a lane (``stream.lane`` while it moves)."""

    def __init__(self, lanes: Lanes, stream: Stream) -> None:
        self.lanes, self.stream = lanes, stream
        self.moved: asyncio.Future[None] = lanes.worker.loop.create_future()
        self.task: asyncio.Task | None = None

    def spliced(self) -> tuple[int, int]:
        return 0, 0  # nothing moves on the lane before the move completes

    def on_moved(self) -> None:
        if not self.moved.done():
            self.moved.set_result(None)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Lanes:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.relays: set[LaneRelay] = set()
        self.held: dict[tuple[bytes, int, int], tuple[asyncio.Transport, bytearray, asyncio.TimerHandle]] = {}
        self._ids = itertools.count(1)

    # --- source: promoting a stream --------------------------------------------------------------------------

    def promote(self, stream: Stream) -> None:
        """``stream`` carried ``lane_threshold`` bytes: move it onto a lane (in the background)."""
        session = stream.session
        if session is None or stream.lane is not None or session.closed:
            return
        if stream.state != OPEN:  # the target has not answered OK yet: ask again with the next bytes
            stream.lane_at = stream.up + stream.down + 1
            return
        move = stream.lane = Move(self, stream)
        stream.pause_local()
        move.task = self.worker.loop.create_task(self._promote(stream, session, move))

    async def _promote(self, stream: Stream, session: Session, move: Move) -> None:
        stats = self.worker.stats
        lane_id = next(self._ids)
        try:
            sock = await self._dial(session, stream.sid, lane_id)
        except (OSError, TimeoutError, handshake.HandshakeError) as err:
            stats.lanes["failed"] += 1
            self.worker.throttled.warning("lane_failed", "no lane for a bulk stream; it stays in its session",
                                          peer=session.peer_id, service=session.service_id, error=str(err))
            if stream.lane is move:
                stream.lane = None
                stream.resume_local()
            return
        try:
            if stream.state != OPEN or session.closed:
                sock.close()
                return
            queued, eof = stream.take_queued()
            if queued:
                await self.worker.loop.sock_sendall(sock, queued)
            session.send_control(MOVE, stream.sid, frames.encode_u64(lane_id))
            await move.moved  # every downstream byte before it came through the session
            transport = stream.transport
            if transport is None or not await drained(transport, stream):
                sock.close()
                return
            local = detach(transport)
            stream.transport = None
            session.forget(stream.sid)
            stats.lanes["opened"] += 1
            relay = LaneRelay(self, stream, local, sock, up_done=eof, down_done=stream.remote_fin)
            stream.lane = relay
            self.relays.add(relay)
            relay.start()
        except asyncio.CancelledError:
            sock.close()
            raise
        except OSError as err:
            sock.close()
            stream.reset(f"lane failed: {err}")

    async def _dial(self, session: Session, sid: int, lane_id: int) -> socket.socket:
        """A lane on the target worker that holds ``session`` (LANE_OK received)."""
        peer = self.worker.snapshot.cfg.peers[session.peer_id]
        message = lane_message(session, sid, lane_id)
        loop = self.worker.loop
        for _ in range(STEER_ATTEMPTS):
            sock = await self.worker.transport.dial_lane(peer, message, priority=session.priority)
            try:
                answer = b""
                while (parsed := handshake.split_message(answer)) is None:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 1024),
                                                   self.worker.snapshot.cfg.connect_timeout)
                    if not chunk:
                        raise OSError("the target closed the lane")
                    answer += chunk
            except BaseException:
                sock.close()
                raise
            mtype, body, _rest = parsed
            if mtype == handshake.LANE_OK:
                return sock
            sock.close()
            reason = body.decode("utf-8", "replace")
            if reason != "wrong_worker":
                raise OSError(f"the target refused the lane: {reason}")
        raise OSError("the lane never reached the worker that holds the session")

    # --- target: a lane arrives, then its MOVE ---------------------------------------------------------------

    def lane_arrived(self, transport: asyncio.Transport, body: bytes, leftover: bytes) -> None:
        try:
            token, sid, lane_id, proof = _LANE.unpack(body)
        except struct.error:
            self._refuse(transport, "malformed")
            return
        if token[0] != self.worker.index:
            self.worker.stats.steered += 1
            transport.write(handshake.reject("wrong_worker"))
            transport.close()
            return
        session = self.worker.target.by_token.get(token)
        if session is None or not hmac.compare_digest(proof, handshake.lane_proof(session.lane_key, token, sid,
                                                                                  lane_id)):
            self._refuse(transport, "unknown session or bad proof")
            return
        if session.streams.get(sid) is None:
            self._refuse(transport, "no such stream")
            return
        buffer = bytearray(leftover)
        transport.set_protocol(_Holding(buffer))
        transport.pause_reading()
        timer = self.worker.loop.call_later(HOLD_SECONDS, self._expire, (token, sid, lane_id))
        self.held[(token, sid, lane_id)] = (transport, buffer, timer)
        transport.write(handshake.message(handshake.LANE_OK, b""))

    def _refuse(self, transport: asyncio.Transport, why: str) -> None:
        self.worker.stats.refused("target", "lane_refused")
        self.worker.throttled.warning("lane_refused", "lane refused", reason=why)
        transport.write(handshake.reject(why))
        transport.close()

    def _expire(self, key: tuple[bytes, int, int]) -> None:
        held = self.held.pop(key, None)
        if held is not None:
            held[0].abort()

    def move_requested(self, session: Session, stream: Stream, lane_id: int) -> None:
        held = self.held.pop((session.token, stream.sid, lane_id), None)
        if held is None or stream.lane is not None or stream.state != OPEN:
            stream.reset("MOVE without a lane")
            return
        lane_transport, leftover, timer = held
        timer.cancel()
        move = stream.lane = Move(self, stream)
        stream.pause_local()
        session.send_control(MOVED, stream.sid)  # after every downstream byte this stream sent in the session
        move.task = self.worker.loop.create_task(self._settle(session, stream, lane_transport, leftover))

    async def _settle(self, session: Session, stream: Stream, lane_transport: asyncio.Transport,
                      leftover: bytearray) -> None:
        transport = stream.transport
        if transport is None or not await drained(transport, stream):
            lane_transport.abort()
            return
        lane = detach(lane_transport)
        netsock.set_priority(lane, session.priority)  # shaped like its session (the reverse direction's limit)
        local = detach(transport)
        stream.transport = None
        session.forget(stream.sid)
        queued, eof = stream.take_queued()
        try:
            if leftover:
                await self.worker.loop.sock_sendall(local, bytes(leftover))
            if queued:
                await self.worker.loop.sock_sendall(lane, queued)
        except OSError as err:
            for sock in (lane, local):
                netsock.reset_close(sock)
            stream.finish_on_lane(f"lane failed: {err}")
            return
        self.worker.stats.lanes["opened"] += 1
        relay = LaneRelay(self, stream, local, lane, up_done=eof, down_done=stream.remote_fin)
        stream.lane = relay
        self.relays.add(relay)
        relay.start()

    # --- both --------------------------------------------------------------------------------------------------

    def close_all(self) -> None:
        for relay in list(self.relays):
            relay.abort("the data plane is stopping")
        for transport, _buffer, timer in self.held.values():
            timer.cancel()
            transport.abort()
        self.held.clear()

    def describe(self) -> dict[str, Any]:
        return {"active": len(self.relays), "held": len(self.held)}


class _Holding(asyncio.Protocol):
    """A lane waiting for its MOVE: keeps what arrives (the source may already splice into it)."""

    def __init__(self, buffer: bytearray) -> None:
        self.buffer = buffer

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def eof_received(self) -> bool:
        return True
