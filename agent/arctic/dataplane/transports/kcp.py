"""The KCP transport: sessions over KCP on UDP, every datagram AEAD-sealed, with FEC and send pacing.

A KCP session is a reliable, ordered byte stream that repairs loss fast (selective, early retransmission, RTO
x1.5 instead of x2, no congestion collapse), which is what long and lossy paths need. ``KcpLink`` presents it
to the session layer as an asyncio transport, so ``session.Session`` and its streams run on it unchanged.

Per datagram, outermost first: sealing (``sealing``: AES-256-GCM, replay window, rekeying) -> FEC shard
(``fec``) -> KCP packet(s). The handshake is the same one TCP sessions run (``handshake``), carried in plain
datagrams::

    HELLO    type u8 | 3 reserved | sender index u32 | receiver index u32 (0) | handshake HELLO | padding to 600 B
    ACCEPT   type u8 | 3 reserved | sender index u32 | receiver index u32 | handshake ACCEPT
    CONFIRM  type u8 | 3 reserved | sender index u32 | receiver index u32 | handshake CONFIRM
    REJECT   type u8 | 3 reserved | 0 | receiver index u32 | reason (ASCII)

then the target answers the CONFIRM with a sealed READY. No amplification: the target answers only a HELLO of
at least 600 bytes, with less than that, and forged or replayed datagrams get no answer at all. Lost handshake
datagrams are sent again (0.2 s, doubling). Each session has its own UDP socket on both sides (the target's is
connected to the source's address, so the kernel gives it that peer's datagrams), which carries the session's
SO_PRIORITY: HTB shapes KCP services like TCP ones.

The tuning is fixed and documented in ``docs/kcp.md`` (``Tuning``). Pacing: new segments are released by a
token bucket through KCP's send window (``_pace``), at the service's bandwidth limit or ``kcp_rate_mbit``, so a
window never leaves as one burst that would overflow a queue on the path; retransmissions are not held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from siokcp import KCPConnection

from .. import handshake, netsock
from ..config import DataplaneConfig, PeerConfig
from ..fec import HEADER_SIZE as SHARD_HEADER_SIZE
from ..fec import FecDecoder, FecEncoder
from ..handshake import ClientHandshake, HandshakeError, Hello, ServerHandshake
from ..sealing import OVERHEAD, Opener, Sealer
from . import Accepting, Established, dial_steered

NAME = "kcp"
HELLO, ACCEPT, CONFIRM, REJECT = 1, 2, 3, 4  # plain handshake datagrams
DATA, READY, BYE = 16, 17, 18  # sealed datagrams
_HS = struct.Struct("!BxxxII")  # type, sender index, receiver index
HELLO_SIZE = 600
DATAGRAM_SIZE = 1350  # UDP payload: below a 1500-byte path MTU with IPv6 and a tunnel header to spare
RETRY_FIRST, RETRY_MAX = 0.2, 1.6
STEER_ATTEMPTS = 16
PACE_UNDER_LIMIT = 0.97  # datagrams carry UDP/IP headers HTB counts too
PENDING_MAX = 4096  # handshakes a worker keeps half-done at once (each expires after the handshake timeout)


@dataclass(frozen=True)
class Tuning:
    """The one KCP configuration (``docs/kcp.md`` explains each value)."""

    nodelay: int = 1  # no-delay mode: RTO min 30 ms, RTO grows x1.5 on loss
    interval: int = 10  # ms between KCP's internal timer runs (we also flush after every input)
    resend: int = 2  # fast retransmit after 2 later segments were acknowledged
    nc: int = 1  # no congestion window: pacing (below) and the window bound the rate instead
    window: int = 4096  # segments in flight, each way: 4096 x 1286 B = 5.3 MB = 168 Mbit/s at 250 ms RTT
    min_rto: int = 50  # ms: 30 fires spurious retransmissions from event-loop jitter
    fec_k: int = 10
    fec_m: int = 3

    @property
    def mtu(self) -> int:
        """KCP's packet size: the datagram minus sealing and the FEC shard header."""
        return DATAGRAM_SIZE - OVERHEAD - SHARD_HEADER_SIZE


@dataclass(frozen=True)
class KcpSettings:
    key: Ed25519PrivateKey
    local_peer_id: str
    port: int
    bind: str
    connect_timeout: float
    window: int  # stream window (the session layer's), for the handshake
    fec: str  # "on" | "auto" | "off"
    rate_mbit: int  # pacing rate of unlimited services (0 = unpaced)
    tuning: Tuning

    @classmethod
    def build(cls, cfg: DataplaneConfig, key: Ed25519PrivateKey) -> KcpSettings:
        return cls(key=key, local_peer_id=cfg.local_peer_id, port=cfg.kcp_port, bind=cfg.tunnel_bind,
                   connect_timeout=cfg.connect_timeout, window=cfg.stream_window, fec=cfg.kcp_fec,
                   rate_mbit=cfg.kcp_rate_mbit, tuning=Tuning(window=cfg.kcp_window))

    @property
    def handshake_timeout(self) -> float:
        return self.connect_timeout + 2.0


def _now_ms() -> int:
    return int(time.monotonic() * 1000) & 0xFFFFFFFF


_SEGMENT = struct.Struct("<IBBHIIII")  # ikcp segment header: conv, cmd, frg, wnd, ts, sn, una, len
LATE = 0x7FFFFFFF  # half the 32-bit millisecond clock: a timestamp this far ahead is "in the future"


def unclocked(packet: memoryview) -> bytearray:
    """A copy of a KCP packet rebuilt by FEC, its segments' timestamps moved half the clock ahead.

    A rebuilt packet arrives a parity group late. Fed as is, its ACKs would give round-trip samples that long
    (and our ACKs of its data would give the peer the same), inflating SRTT and its variance and so every
    retransmission timeout: sparse small messages then wait hundreds of ms for a loss to be repaired. ikcp takes
    an RTT sample only when ``current - ts >= 0``; shifted by half the clock the difference is negative, so
    these packets still deliver data and acknowledge, but never clock the RTT (kcp-go's ``regular == false``).
    """
    out = bytearray(packet)
    pos = 0
    while pos + _SEGMENT.size <= len(out):
        conv, cmd, frg, wnd, ts, sn, una, length = _SEGMENT.unpack_from(out, pos)
        _SEGMENT.pack_into(out, pos, conv, cmd, frg, wnd, (ts + LATE) & 0xFFFFFFFF, sn, una, length)
        pos += _SEGMENT.size + length
    return out


def _no_log(_message: str) -> None:
    """KCP's own log callback (unused)."""


# --- a KCP session as an asyncio transport ----------------------------------------------------------------------

class KcpLink(asyncio.Transport):
    """One KCP session: sealed datagrams out through ``send``, in through ``datagram``; a byte stream above."""

    def __init__(self, *, conv: int, sealer: Sealer, opener: Opener, send: Callable[[bytes], None],
                 sock: socket.socket, tuning: Tuning, fec: str, rate_bps: int, on_closed: Callable[[], None],
                 log: Any = None) -> None:
        super().__init__()
        self.loop = asyncio.get_event_loop()
        self.sealer, self.opener, self._send, self.sock = sealer, opener, send, sock
        self.tuning = tuning
        self._on_closed = on_closed
        self.log = log
        self.protocol: asyncio.Protocol | None = None
        kcp = self.kcp = KCPConnection(conv, self._output, _no_log)
        kcp.nodelay(tuning.nodelay, tuning.interval, tuning.resend, tuning.nc)
        kcp.wndsize(tuning.window, tuning.window)
        kcp.setmtu(tuning.mtu)
        kcp.stream = 1
        kcp.rx_minrto = tuning.min_rto
        self.encoder = FecEncoder(tuning.fec_k, tuning.fec_m, fec)
        self.decoder = FecDecoder(tuning.fec_k, tuning.fec_m)
        self._buffer = bytearray(max(256 * kcp.mss, 1 << 20))  # a peer may send 256-fragment messages
        self._view = memoryview(self._buffer)
        self._closing = self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._high = 2 * tuning.window  # segments waiting before the session layer is told to hold on
        self._low = tuning.window
        self.bytes_in = self.bytes_out = 0
        self.datagrams_in = self.datagrams_out = 0
        self._output_error: str | None = None
        self.ready: asyncio.Future[None] | None = None  # the client's wait for the target's first datagram
        # pacing: a token bucket that gates new segments through KCP's send window
        self.default_rate = rate_bps
        self.rate = rate_bps / 8.0  # bytes per second, 0 = unpaced
        self._tokens = 0.0
        self._burst = 0.0
        self._sent_since = 0
        self._paced_at = time.monotonic()
        self.set_rate(rate_bps)
        kcp.update(_now_ms())
        self._arm(tuning.interval)

    # --- asyncio transport surface used by the session layer -----------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "peername":
            with contextlib.suppress(OSError):
                return self.sock.getpeername()
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[return-value]

    def is_closing(self) -> bool:
        return self._closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Kept in KCP segments (``waitsnd``) rather than bytes; the session's byte limits are not used."""

    def get_write_buffer_size(self) -> int:
        return self.kcp.waitsnd() * self.kcp.mss

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._schedule()

    def write(self, data: bytes | memoryview) -> None:
        if self._closing:
            return
        view = memoryview(data)
        step = 64 * self.kcp.mss  # ikcp takes at most 127 segments per call
        for offset in range(0, len(view), step):
            self.kcp.send(view[offset : offset + step])
        self.bytes_out += len(view)
        self._schedule()
        if not self._writing_paused and self.kcp.waitsnd() > self._high and self.protocol is not None:
            self._writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.write(piece)

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            with contextlib.suppress(Exception):
                self.kcp.flush()
            self._bye()
            self._finish(None)

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            self._bye()
            self._finish(None)

    # --- datagrams ---------------------------------------------------------------------------------------------

    def _output(self, packet: bytes) -> int:
        """KCP's output callback (called from C: must return an int and never raise)."""
        try:
            for shard in self.encoder.encode(packet):
                self._emit(shard)
        except Exception as err:  # noqa: BLE001 - nothing may escape into C; the first failure is logged
            self._output_failed(err)
        return 0

    def _output_failed(self, err: Exception) -> None:
        if self._output_error is None and self.log is not None:
            self._output_error = str(err)
            self.log.warning("KCP output failed", error=str(err))

    def _emit(self, shard: bytes) -> None:
        datagram = self.sealer.seal(DATA, shard)
        self._sent_since += len(datagram)
        self.datagrams_out += 1
        self._send(datagram)

    def _flushed(self, before: tuple[int, int]) -> None:
        """After a flush: if it sent data (new or again) and nothing more is queued, close the open FEC group.

        Its parity would otherwise wait for shards that are not coming, and a small message's loss would cost a
        retransmission timeout (``fec.FecEncoder.flush_partial``). Bulk senders always have more queued, so their
        groups fill as usual; a flush of acknowledgements alone sends no data and closes nothing."""
        kcp = self.kcp
        if kcp.nsnd_que == 0 and (kcp.snd_nxt, kcp.xmit) != before:
            try:
                for shard in self.encoder.flush_partial():
                    self._emit(shard)
            except Exception as err:  # noqa: BLE001 - as in _output
                self._output_failed(err)

    def datagram(self, data: bytes) -> None:
        """A sealed datagram of this session arrived."""
        if self._closed:
            return
        opened = self.opener.open(data)
        if opened is None:
            return
        dtype, loss, payload = opened
        self.datagrams_in += 1
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)
        self.encoder.observe_loss(loss / 256)
        if dtype == DATA:
            kcp = self.kcp
            kcp.current = _now_ms()
            own, rebuilt = self.decoder.decode(payload)
            if own is not None:
                kcp.receive_data(own)
            for packet in rebuilt:
                kcp.receive_data(unclocked(packet))
            self.sealer.loss_report = self.decoder.meter.report()
            self._schedule()
        elif dtype == BYE:
            self._finish(ConnectionResetError("the peer closed the KCP session"))

    def _bye(self) -> None:
        with contextlib.suppress(OSError):
            self._send(self.sealer.seal(BYE, b""))

    # --- the engine: flush after input (ACK clocking), pacing, timers ----------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._service)

    def _service(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        kcp = self.kcp
        if not self._reading_paused and self.protocol is not None:
            got = 0
            view = self._view
            while True:
                n = kcp.next_event_into(view[got:]) if got < len(view) - kcp.mss else -1
                if n <= 0:
                    break
                got += n
            if got:
                self.bytes_in += got
                self.protocol.data_received(bytes(view[:got]))
                if self._closed:
                    return
        kcp.current = _now_ms()
        self._pace()
        before = kcp.snd_nxt, kcp.xmit
        kcp.flush()
        self._flushed(before)
        if self._writing_paused and kcp.waitsnd() <= self._low and self.protocol is not None:
            self._writing_paused = False
            self.protocol.resume_writing()
        if kcp.state < 0:
            self._finish(ConnectionResetError("the KCP session is dead (too many retransmissions)"))

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        kcp = self.kcp
        now = _now_ms()
        kcp.current = now
        self._pace()
        before = kcp.snd_nxt, kcp.xmit
        kcp.update(now)
        self._flushed(before)
        if kcp.state < 0:
            self._finish(ConnectionResetError("the KCP session is dead (too many retransmissions)"))
            return
        wait = (kcp.check(now) - now) & 0xFFFFFFFF
        if self.rate and kcp.waitsnd():
            wait = min(wait, 2)  # paced and data queued: release the next tokens soon
        self._arm(max(1, min(wait, self.tuning.interval)))
        if kcp.waitsnd() and not self._reading_paused:
            self._schedule()

    def _arm(self, ms: int) -> None:
        if self._timer is None and not self._closed:
            self._timer = self.loop.call_later(ms / 1000.0, self._tick)

    def limit(self, mbps: int) -> None:
        """The service's bandwidth limit (0 = none): pace at it, a little under, so HTB never has to drop."""
        self.set_rate(int(mbps * 1_000_000 * PACE_UNDER_LIMIT) if mbps else self.default_rate)

    def set_rate(self, rate_bps: int) -> None:
        """Pace at ``rate_bps`` bits/s of datagrams (parity included); 0 = unpaced."""
        self.rate = rate_bps / 8.0
        self._burst = max(self.rate * 0.004, 16.0 * DATAGRAM_SIZE)  # 4 ms at the rate, at least 16 datagrams
        self._tokens = min(self._tokens, self._burst) if self._tokens else self._burst
        if not self.rate:
            self.kcp.snd_wnd = self.tuning.window

    def _pace(self) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._paced_at) * self.rate) - self._sent_since
        self._paced_at, self._sent_since = now, 0
        kcp = self.kcp
        segment = DATAGRAM_SIZE * (1 + (self.tuning.fec_m / self.tuning.fec_k if self.encoder.parity_on else 0))
        in_flight = (kcp.snd_nxt - kcp.snd_una) & 0xFFFFFFFF
        kcp.snd_wnd = max(1, min(self.tuning.window, in_flight + int(max(0.0, self._tokens) // segment)))

    # --- ending ----------------------------------------------------------------------------------------------------

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.kcp.send_cb = None  # the binding keeps no GC link: break the cycle to free the session
        self._on_closed()
        protocol = self.protocol
        if protocol is not None:
            self.loop.call_soon(protocol.connection_lost, exc)

    def describe(self) -> dict[str, Any]:
        kcp = self.kcp
        return {"srtt_ms": kcp.rx_srtt, "rto_ms": kcp.rx_rto, "retransmits": kcp.xmit,
                "fec_recovered": self.decoder.recovered, "fec_parity_sent": self.encoder.parity_sent,
                "fec_short_groups": self.encoder.groups_closed_early,
                "fec_parity": self.encoder.parity_on, "loss_seen": round(self.decoder.meter.loss, 4),
                "datagrams_in": self.datagrams_in, "datagrams_out": self.datagrams_out,
                "dropped": dict(self.opener.dropped), "pacing_mbit": round(self.rate * 8 / 1e6, 1)}


# --- UDP endpoints ---------------------------------------------------------------------------------------------

class _SessionEndpoint(asyncio.DatagramProtocol):
    """A session's own UDP socket: its datagrams go to its link."""

    def __init__(self) -> None:
        self.link: KcpLink | None = None
        self.handshake_waiter: Callable[[bytes], None] | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.link is not None and data and data[0] >= DATA:
            self.link.datagram(data)
        elif self.handshake_waiter is not None:
            self.handshake_waiter(data)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors and EPERM from a dropping firewall: KCP retransmits, nothing to do."""


def _udp_socket(family: socket.AddressFamily, *, priority: int = 0, bind: tuple | None = None,
                connect: tuple | None = None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
        netsock.set_priority(sock, priority)
        if bind is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(bind)
        if connect is not None:
            sock.connect(connect)
    except BaseException:
        sock.close()
        raise
    return sock


def _hs_datagram(mtype: int, sender: int, receiver: int, body: bytes, pad_to: int = 0) -> bytes:
    datagram = _HS.pack(mtype, sender, receiver) + body
    return datagram + bytes(max(0, pad_to - len(datagram)))


@dataclass
class _Pending:
    hs: ServerHandshake
    accept: bytes
    index: int
    addr: Any
    expires: float
    client_index: int
    link: KcpLink | None = None


class _Listener(asyncio.DatagramProtocol):
    """The worker's UDP socket on the KCP port: handshakes, and datagrams of sessions not yet on their socket."""

    def __init__(self, owner: KcpTransport) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Pending] = {}  # our session index -> half-done handshake
        self.by_hello: dict[tuple, int] = {}  # (address, client index) -> our index (a repeated HELLO)

    @property
    def settings(self) -> KcpSettings:
        """The transport's current settings: a reload reaches a listener that stays open."""
        assert self.owner.settings is not None
        return self.owner.settings

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        """Nothing to do: handshakes are retransmitted by the client."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data:
            return
        dtype = data[0]
        if dtype >= DATA:
            if len(data) >= 8:
                link = self.owner.links.get(int.from_bytes(data[4:8], "big"))
                if link is not None:
                    link.datagram(data)
                    return
            self.owner.dropped("unknown_session")
        elif dtype == HELLO:
            self._hello(data, addr)
        elif dtype == CONFIRM:
            self._confirm(data, addr)
        else:
            self.owner.dropped("malformed")

    def _send(self, datagram: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(datagram, addr)

    def _forget(self, index: int) -> _Pending | None:
        pending = self.pending.pop(index, None)
        if pending is not None:
            self.by_hello.pop((pending.addr, pending.client_index), None)
        return pending

    def _expire(self) -> None:
        now = time.monotonic()
        for index in [i for i, p in self.pending.items() if p.expires < now]:
            pending = self._forget(index)
            if pending is not None and pending.link is None:
                self.owner.accepting.link_failed("setup_timeout", "the KCP handshake was not completed",
                                                 netsock.fmt(pending.addr))

    def _hello(self, data: bytes, addr: Any) -> None:
        if len(data) < HELLO_SIZE or len(data) < _HS.size + handshake.PREFIX.size:
            self.owner.dropped("malformed")  # too short to answer: no reply may be larger than the request
            return
        _t, client_index, _r = _HS.unpack_from(data)
        known = self.by_hello.get((addr, client_index))
        if known is not None and known in self.pending:
            self._send(self.pending[known].accept, addr)  # our ACCEPT was lost: the same one again
            return
        self._expire()
        if len(self.pending) >= PENDING_MAX:
            self.owner.dropped("handshake_overload")
            return
        try:
            message = handshake.split_message(data[_HS.size :])  # the padding after it is ignored
            if message is None:
                raise HandshakeError("truncated HELLO", "malformed")
            mtype, body, _rest = message
            index = secrets.randbits(32) or 1
            hs = ServerHandshake(self.settings.key, self.settings.local_peer_id, self.owner.peer_key,
                                 self.settings.window, index.to_bytes(4, "big") + bytes(12),
                                 worker=self.owner.worker_index, workers=self.owner.worker_count)
            accept = hs.on_hello(mtype, body)
        except HandshakeError as err:
            if err.reason == "wrong_worker":
                self.owner.accepting.steered()
            else:
                self.owner.accepting.link_failed("tunnel_auth_failed" if err.reason != "malformed"
                                                 else "malformed_handshake", str(err), netsock.fmt(addr))
            self._send(_hs_datagram(REJECT, 0, client_index, err.reason.encode()[:32]), addr)
            return
        datagram = _hs_datagram(ACCEPT, index, client_index, accept)
        self.pending[index] = _Pending(hs, datagram, index, addr, time.monotonic() + self.settings.handshake_timeout,
                                       client_index)
        self.by_hello[(addr, client_index)] = index
        self._send(datagram, addr)

    def _confirm(self, data: bytes, addr: Any) -> None:
        if len(data) < _HS.size:
            return
        _t, client_index, index = _HS.unpack_from(data)
        pending = self.pending.get(index)
        if pending is None or pending.addr != addr:
            self.owner.dropped("unknown_session")
            return
        if pending.link is not None:  # our READY was lost: say it again
            pending.link._send(pending.link.sealer.seal(READY, b""))
            return
        try:
            message = handshake.split_message(data[_HS.size :])
            if message is None:
                raise HandshakeError("truncated CONFIRM", "malformed")
            keys = pending.hs.on_confirm(*message[:2])
        except HandshakeError as err:
            self._forget(index)
            self.owner.accepting.link_failed("tunnel_auth_failed", str(err), netsock.fmt(addr))
            return
        hello = pending.hs.hello
        assert hello is not None
        self.owner.loop.create_task(self._establish(pending, hello, keys, client_index))

    async def _establish(self, pending: _Pending, hello: Hello, keys: handshake.SessionKeys,
                         client_index: int) -> None:
        """The session gets a UDP socket of its own, connected to the source (its own SO_PRIORITY)."""
        local = self.transport.get_extra_info("sockname") if self.transport is not None else None
        try:
            sock = _udp_socket(netsock.family_of(pending.addr[0]), bind=(local[0], local[1]),
                               connect=pending.addr[:2])
        except OSError as err:
            self._forget(pending.index)
            self.owner.accepting.link_failed("tunnel_failed", f"no UDP socket for the session: {err}",
                                             netsock.fmt(pending.addr))
            return
        endpoint = _SessionEndpoint()
        transport, _ = await self.owner.loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        link = self.owner.new_link(conv=client_index, keys=keys, client=False, peer_index=client_index,
                                   local_index=pending.index, transport=transport, sock=sock)
        endpoint.link = link
        pending.link = link
        pending.expires = time.monotonic() + self.settings.handshake_timeout  # keep answering lost CONFIRMs
        link._send(link.sealer.seal(READY, b""))
        self.owner.accepting.link_established(Established(
            transport=link, hello=hello, keys=keys, token=pending.index.to_bytes(4, "big") + bytes(12),
            peer_window=pending.hs.peer_window, mac=None, encrypted=True), NAME)


class KcpTransport:
    """Dials and accepts KCP sessions for one worker."""

    name = NAME

    def __init__(self, accepting: Accepting, worker_index: int, worker_count: int, log: Any = None) -> None:
        self.accepting = accepting
        self.worker_index, self.worker_count = worker_index, worker_count
        self.log = log
        self.settings: KcpSettings | None = None
        self.links: dict[int, KcpLink] = {}  # our session index -> link
        self._peer_keys: dict[str, bytes] = {}
        self.drops: dict[str, int] = {}
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    def update(self, cfg: DataplaneConfig, settings: KcpSettings) -> None:
        self.settings = settings
        self._peer_keys = {p.peer_id: p.public_key for p in cfg.peers.values()}

    def peer_key(self, peer_id: str) -> bytes | None:
        return self._peer_keys.get(peer_id)

    def dropped(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def dropped_totals(self) -> dict[str, int]:
        totals = dict(self.drops)
        for link in self.links.values():
            for reason, count in link.opener.dropped.items():
                totals[reason] = totals.get(reason, 0) + count
        return totals

    async def listen(self, sock: socket.socket) -> asyncio.DatagramTransport:
        """Serve the KCP port on ``sock`` (a bound UDP socket) until the returned transport is closed."""
        assert self.settings is not None
        self.loop = asyncio.get_running_loop()
        transport, _ = await self.loop.create_datagram_endpoint(lambda: _Listener(self), sock=sock)
        return transport

    def new_link(self, *, conv: int, keys: handshake.SessionKeys, client: bool, peer_index: int, local_index: int,
                 transport: asyncio.DatagramTransport, sock: socket.socket) -> KcpLink:
        settings = self.settings
        assert settings is not None
        send_key, recv_key = ((keys.client_to_server, keys.server_to_client) if client
                              else (keys.server_to_client, keys.client_to_server))

        def closed() -> None:
            for reason, count in link.opener.dropped.items():  # the totals never go down
                self.drops[reason] = self.drops.get(reason, 0) + count
            self.links.pop(local_index, None)
            with contextlib.suppress(Exception):
                transport.close()

        link = KcpLink(conv=conv, sealer=Sealer(send_key, peer_index), opener=Opener(recv_key),
                       send=transport.sendto, sock=sock, tuning=settings.tuning, fec=settings.fec,
                       rate_bps=settings.rate_mbit * 1_000_000, on_closed=closed, log=self.log)
        self.links[local_index] = link
        return link

    async def dial(self, peer: PeerConfig, hello: Hello, *, priority: int) -> Established:
        """Open an authenticated KCP session to ``peer`` (on the worker ``hello.want`` asks for, if possible)."""
        return await dial_steered(lambda h: self._dial_once(peer, h, priority=priority), hello, STEER_ATTEMPTS)

    async def _dial_once(self, peer: PeerConfig, hello: Hello, *, priority: int) -> Established:
        settings = self.settings
        assert settings is not None
        self.loop = loop = asyncio.get_running_loop()
        address = (peer.tunnel_address, settings.port)
        try:
            sock = _udp_socket(netsock.family_of(peer.tunnel_address), priority=priority, connect=address)
        except OSError as err:
            raise HandshakeError(f"cannot reach {netsock.fmt(address)}/udp: {err}", "tunnel_connect_failed") from None
        endpoint = _SessionEndpoint()
        transport, _ = await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        index = secrets.randbits(32) or 1
        hs = ClientHandshake(settings.key, hello, peer.public_key)
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        endpoint.handshake_waiter = answers.put_nowait
        deadline = loop.time() + settings.handshake_timeout
        try:
            server_index, confirm = await self._exchange(transport, answers, index, hs, deadline, address)
            keys = hs.keys
            assert keys is not None
            link = self.new_link(conv=index, keys=keys, client=True, peer_index=server_index, local_index=index,
                                 transport=transport, sock=sock)
            endpoint.link = link
            await self._await_ready(transport, link, answers, confirm, deadline, address)
        except BaseException:
            self.links.pop(index, None)
            transport.close()
            raise
        finally:
            endpoint.handshake_waiter = None
        return Established(transport=link, hello=hello, keys=keys, token=server_index.to_bytes(4, "big") + bytes(12),
                           peer_window=hs.peer_window, mac=None, encrypted=True)

    async def _exchange(self, transport: asyncio.DatagramTransport, answers: asyncio.Queue, index: int,
                        hs: ClientHandshake, deadline: float, address: tuple) -> tuple[int, bytes]:
        """HELLO until ACCEPT (or REJECT); returns (the target's session index, our CONFIRM datagram)."""
        hello = _hs_datagram(HELLO, index, 0, hs.first_message, pad_to=HELLO_SIZE)
        retry = RETRY_FIRST
        while True:
            transport.sendto(hello)
            data = await self._next(answers, min(retry, deadline - self.loop.time()), deadline, address)
            retry = min(retry * 2, RETRY_MAX)
            if data is None or len(data) < _HS.size:
                continue
            dtype, sender, receiver = _HS.unpack_from(data)
            if receiver != index:
                continue
            if dtype == REJECT:
                reason = data[_HS.size :].decode("ascii", "replace")
                if reason == "wrong_worker":
                    raise HandshakeError("another worker of the target answered", "wrong_worker")
                raise HandshakeError(f"the target peer rejected the session: {reason}")
            if dtype == ACCEPT:
                message = handshake.split_message(data[_HS.size :])
                if message is None:
                    continue
                confirm = hs.on_answer(*message[:2])
                return sender, _hs_datagram(CONFIRM, index, sender, confirm)

    async def _await_ready(self, transport: asyncio.DatagramTransport, link: KcpLink, answers: asyncio.Queue,
                           confirm: bytes, deadline: float, address: tuple) -> None:
        """CONFIRM until the target's sealed READY (or its first sealed datagram) arrives."""
        retry = RETRY_FIRST
        link.ready = self.loop.create_future()
        while True:
            transport.sendto(confirm)
            try:
                await asyncio.wait_for(asyncio.shield(link.ready), max(0.001, min(retry, deadline - self.loop.time())))
                return
            except TimeoutError:
                if self.loop.time() >= deadline:
                    raise HandshakeError(f"no READY from {netsock.fmt(address)}/udp", "tunnel_connect_failed") from None
                retry = min(retry * 2, RETRY_MAX)

    async def _next(self, answers: asyncio.Queue, wait: float, deadline: float, address: tuple) -> bytes | None:
        if self.loop.time() >= deadline:
            raise HandshakeError(f"no answer from {netsock.fmt(address)}/udp", "tunnel_connect_failed")
        try:
            return await asyncio.wait_for(answers.get(), max(0.001, wait))
        except TimeoutError:
            return None


def kcp_listener(address: str, port: int) -> socket.socket:
    """The worker's UDP socket on the KCP port (SO_REUSEPORT: the kernel spreads sources over the workers)."""
    return _udp_socket(netsock.family_of(address), bind=(address, port))

