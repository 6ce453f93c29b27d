"""Sessions and streams in one event loop, over socket pairs (no namespaces): the multiplexing rules.

A client session and a server session talk over one socket pair (the "tunnel"); each stream's local end is
another socket pair, so every rule runs against real transports: bytes in order both ways, half-close,
reset, credit-based flow control (a reader that stops costs its own window only), window auto-tuning, fair
turns for waiting streams, keepalive and MAC failures ending a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field

import pytest
from arctic.dataplane import frames, handshake
from arctic.dataplane.session import QUANTUM, TCP_NOTSENT_LOWAT, Session
from arctic.dataplane.streams import CONNECTING, OPENING, Stream

SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"
WINDOW = 64 * 1024


@dataclass
class Side:
    """A side's hooks (StreamHooks) and owner (SessionOwner) in one."""

    name: str
    loop: asyncio.AbstractEventLoop
    finished: list[tuple[Stream, str | None]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    upstreams: list[socket.socket] = field(default_factory=list)  # server side: the far end of each stream
    buffers: int = 0  # kernel buffer size of the next upstream pairs (0: the kernel's default)
    accepted: asyncio.Queue = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set by every stream_finished
    session_ended: asyncio.Event = field(default_factory=asyncio.Event)  # set by every session_closed

    # StreamHooks
    def local_connected(self, stream: Stream) -> None:
        if stream.state == CONNECTING:
            stream.upstream_ready()

    def stream_finished(self, stream: Stream, reset: str | None) -> None:
        self.finished.append((stream, reset))
        self.ended.set()

    def stream_refused(self, stream: Stream, reason: str, detail: str) -> None:
        self.refused.append((reason, detail))

    def promote(self, stream: Stream) -> None:
        pass

    # SessionOwner
    def session_closed(self, session: Session, reason: str) -> None:
        self.closed.append(reason)
        self.session_ended.set()

    def stream_requested(self, session: Session, sid: int, opening: frames.Open) -> None:
        stream = Stream(self)
        session.accept_stream(stream, sid)
        stream.bind(session, sid, CONNECTING)
        ours, theirs = tcp_pair(self.buffers)
        theirs.setblocking(False)
        self.upstreams.append(theirs)
        self.accepted.put_nowait(theirs)
        self.loop.create_task(self.loop.connect_accepted_socket(lambda: stream, ours))

    def lane_moved(self, session: Session, stream: Stream, lane_id: int) -> None:
        stream.reset("no lanes here")


def tcp_pair(buffers: int = 0) -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on loopback (a Unix socket pair cannot carry a reset); ``buffers`` caps the
    kernel's socket buffers (what a stalled reader lets the kernel absorb)."""
    with socket.socket() as listener:
        one = socket.socket()
        for sock in (listener, one):
            if buffers:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        one.connect(listener.getsockname())
        two, _ = listener.accept()
    return one, two


async def pair(*, mac: bool = True, window: int = WINDOW, max_window: int = WINDOW, keepalive: float = 30.0):
    """A connected client and server session; returns (client side, client session, server side, server)."""
    loop = asyncio.get_running_loop()
    keys = handshake.SessionKeys(os.urandom(32), os.urandom(32), os.urandom(32))
    left, right = socket.socketpair()
    sides, sessions = [], []
    for name, sock, role in (("client", left, "client"), ("server", right, "server")):
        side = Side(name, loop)
        session = Session(owner=side, role=role, local_peer_id=name, peer_id="peer", service_id=SVC, slot=0,
                          token=bytes(16), mac=handshake.control_mac(keys, client=role == "client") if mac else None,
                          window=window, peer_window=window, max_window=max_window, transport_name="tcp",
                          encrypted=not mac, keepalive=keepalive)
        transport, _ = await loop.connect_accepted_socket(lambda s=session: s, sock)
        session.attach(transport)
        sides.append(side)
        sessions.append(session)
    return sides[0], sessions[0], sides[1], sessions[1]


async def open_stream(side: Side, session: Session) -> tuple[Stream, socket.socket, socket.socket]:
    """A source stream whose client end is returned, plus the server's far end of it."""
    loop = asyncio.get_running_loop()
    stream = Stream(side)
    ours, client = tcp_pair()
    client.setblocking(False)
    await loop.connect_accepted_socket(lambda: stream, ours)
    sid = session.open_stream(stream, frames.Open(SVC, ("10.0.0.2", 40000), ("192.168.100.2", 80)))
    stream.bind(session, sid, OPENING)
    stream.pump(1 << 30)
    return stream, client, None  # type: ignore[return-value]


async def read_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while len(data) < n:
            chunk = await loop.sock_recv(sock, min(1 << 20, n - len(data)))
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 1 << 20):
            data += chunk
    return bytes(data)


async def send_and_close(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    sock.shutdown(socket.SHUT_WR)


def run(coro):
    import uvloop

    return uvloop.run(coro)


@pytest.mark.parametrize("mac", [True, False], ids=["plaintext-mac", "tls-like"])
def test_bytes_cross_intact_both_ways_and_each_half_close_arrives_after_the_last_byte(mac):
    async def main():
        cside, client_session, sside, _server_session = await pair(mac=mac)
        _stream, client, _ = await open_stream(cside, client_session)
        upstream = await asyncio.wait_for(sside.accepted.get(), 5)
        up, down = os.urandom(3 << 20), os.urandom(2 << 20)
        _, received = await asyncio.gather(send_and_close(client, up), read_to_eof(upstream))
        assert received == up  # everything, then the FIN
        _, received = await asyncio.gather(send_and_close(upstream, down), read_to_eof(client))
        assert received == down  # the other direction still flowed after the first FIN
        for side in (cside, sside):
            await asyncio.wait_for(side.ended.wait(), 5)
            assert side.finished[0][1] is None  # a clean end, not a reset
        assert not client_session.streams

    run(main())


def test_a_reset_on_one_end_reaches_the_other_as_a_reset():
    async def main():
        cside, client_session, sside, _ = await pair()
        _stream, client, _ = await open_stream(cside, client_session)
        upstream = await asyncio.wait_for(sside.accepted.get(), 5)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        upstream.close()
        loop = asyncio.get_running_loop()
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                while await loop.sock_recv(client, 1024):
                    pass

    run(main())


def test_a_reader_that_stops_holds_one_window_and_the_other_stream_keeps_flowing():
    async def main():
        cside, client_session, sside, server_session = await pair(window=WINDOW, max_window=WINDOW)
        loop = asyncio.get_running_loop()
        _slow, slow_client, _ = await open_stream(cside, client_session)
        slow_up = await asyncio.wait_for(sside.accepted.get(), 5)
        _fast, fast_client, _ = await open_stream(cside, client_session)
        fast_up = await asyncio.wait_for(sside.accepted.get(), 5)
        slow_client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        async def flood() -> int:  # the server end writes to a client that never reads
            sent = 0
            chunk = b"s" * 65536
            try:
                async with asyncio.timeout(2):
                    while True:
                        await loop.sock_sendall(slow_up, chunk)
                        sent += len(chunk)
            except TimeoutError:
                return sent

        flooding = loop.create_task(flood())
        payload = os.urandom(8 << 20)
        _, received = await asyncio.gather(send_and_close(fast_up, payload), read_to_eof(fast_client))
        assert received == payload  # not blocked behind the stalled stream
        sent = await flooding
        held = sum(s.out_bytes for s in server_session.streams.values())
        # what the stalled stream has out of the kernel's buffers: at most one window on its way, plus one read
        assert held <= 256 * 1024, held
        assert sent < 32 << 20  # the server end was stopped too: flow control reached it

    run(main())


def test_a_fast_stream_grows_its_window_and_a_stalled_one_does_not():
    async def main():
        cside, client_session, sside, server_session = await pair(window=WINDOW, max_window=16 * WINDOW)
        loop = asyncio.get_running_loop()
        stream, client, _ = await open_stream(cside, client_session)
        upstream = await asyncio.wait_for(sside.accepted.get(), 5)
        await asyncio.gather(loop.sock_sendall(client, os.urandom(8 << 20)), read_exactly(upstream, 8 << 20))
        target_stream = next(iter(server_session.streams.values()))
        assert target_stream.window > WINDOW  # the reader kept up: the window was the limit, so it grew
        sside.buffers = 16 * 1024
        _stalled, stalled_client, _ = await open_stream(cside, client_session)
        await asyncio.wait_for(sside.accepted.get(), 5)  # its far end never reads
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.sock_sendall(stalled_client, os.urandom(4 << 20)), 2)
        stalled = [s for s in server_session.streams.values() if s is not target_stream][0]
        assert stalled.window <= 2 * WINDOW < target_stream.window  # it stopped: the reader, not the window, limits
        assert stream.credit >= 0

    run(main())


def test_waiting_streams_take_turns_of_one_quantum_each():
    async def main():
        cside, client_session, _sside, _ = await pair()
        order: list[int] = []

        class Recorder:
            def __init__(self, sid: int, turns: int) -> None:
                self.sid, self.turns, self.waiting = sid, turns, False

            def pump(self, budget: int) -> bool:
                assert budget == QUANTUM
                order.append(self.sid)
                self.turns -= 1
                return self.turns > 0

        client_session._paused = True
        for sid, turns in ((1, 3), (3, 1), (5, 2)):
            client_session.wait_to_send(Recorder(sid, turns))  # type: ignore[arg-type]
        client_session.resume_writing()
        for _ in range(5):
            client_session._serve_waiting()
        assert order == [1, 3, 5, 1, 5, 1]

    run(main())


def test_a_peer_that_falls_silent_loses_its_session_after_three_keepalives():
    async def main():
        cside, client_session, _sside, server_session = await pair(keepalive=0.05)
        server_session.transport.pause_reading()  # the server hears nothing ...
        server_session._timer.cancel()  # ... and says nothing, like a dead host
        await asyncio.wait_for(cside.session_ended.wait(), 5)
        assert "no answer" in cside.closed[0]

    run(main())


def test_a_control_frame_with_a_wrong_mac_ends_the_session_and_its_streams():
    async def main():
        cside, client_session, sside, _ = await pair(mac=True)
        stream, client, _ = await open_stream(cside, client_session)
        await asyncio.wait_for(sside.accepted.get(), 5)
        bogus = frames.header(frames.FIN, stream.sid, 16) + bytes(16)  # FIN with a MAC nobody computed
        client_session.transport.write(bogus)
        await asyncio.wait_for(sside.session_ended.wait(), 5)
        assert sside.closed == ["bad_mac"]

    run(main())


def test_a_local_socket_reset_while_its_stream_waits_for_credit_drops_what_was_not_read_yet():
    """Linux keeps the bytes a socket had received readable after a RST: a stream of a limited service, paused by
    flow control, must not relay them (at 10 Mbit/s that was seconds of dead traffic in front of the next flow)."""
    async def main():
        cside, client_session, sside, _ = await pair(window=WINDOW, max_window=WINDOW)
        client_session.bound_backlog(10)  # a service limited to 10 Mbit/s
        sside.buffers = 16 * 1024  # the server end absorbs little: credit stops once it stops reading
        loop = asyncio.get_running_loop()
        stream, client, _ = await open_stream(cside, client_session)
        upstream = await asyncio.wait_for(sside.accepted.get(), 5)
        with contextlib.suppress(TimeoutError):  # fill every buffer up to the paused stream's socket
            async with asyncio.timeout(1):
                await loop.sock_sendall(client, os.urandom(8 << 20))
        assert stream.reading_paused
        relayed_before = stream.up
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with contextlib.suppress(ConnectionResetError):  # the server end reads again: credit flows back
            async with asyncio.timeout(5):
                while await loop.sock_recv(upstream, 1 << 16):
                    pass
        await asyncio.wait_for(cside.ended.wait(), 5)
        assert cside.finished[0][1] == "local socket reset"
        assert stream.up - relayed_before <= WINDOW

    run(main())


@pytest.mark.parametrize(("limit_mbps", "high", "lowat"), [(10, 64 * 1024, 64 * 1024), (100, 250_000, 250_000),
                                                            (1000, 1 << 20, 2_500_000), (0, 1 << 20, 0)])
def test_a_limited_session_holds_at_most_20_ms_at_its_rate_unsent(limit_mbps, high, lowat):
    """What a reset stream left in a session's buffers drains at the limit before the slot's next stream moves."""
    async def main():
        loop = asyncio.get_running_loop()
        ours, theirs = tcp_pair()
        side = Side("client", loop)
        session = Session(owner=side, role="client", local_peer_id="a", peer_id="b", service_id=SVC, slot=0,
                          token=bytes(16), mac=None, window=WINDOW, peer_window=WINDOW, max_window=WINDOW,
                          transport_name="tcp", encrypted=True, keepalive=30.0)
        transport, _ = await loop.connect_accepted_socket(lambda: session, ours)
        session.attach(transport)
        session.bound_backlog(limit_mbps)
        assert transport.get_write_buffer_limits()[1] == high
        assert ours.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT) == lowat
        session.close("done")
        theirs.close()

    run(main())
