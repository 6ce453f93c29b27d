"""The TCP transport: sessions over one TCP connection each, plaintext or TLS 1.3 (``encryption``).

Dialing: a non-blocking socket with the session's SO_PRIORITY (its QoS slot) and congestion control (BBR by
default: it keeps a lossy path usable where cubic collapses), connect, TLS if asked (the client context trusts
exactly the target's identity key), then the identity handshake. Accepting: the tunnel listener's connections
go through TLS (if asked) and the handshake; an authenticated link goes to the worker, and in plaintext a
connection that starts with a LANE message is a zero-copy lane for a stream that already exists (``lanes``).

Both ends bound the handshake in time, so a peer that never finishes holds nothing for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import handshake, netsock, tls
from ..config import DataplaneConfig, PeerConfig
from ..handshake import ClientHandshake, HandshakeError, Hello, ServerHandshake
from . import Accepting, Established, dial_steered

NAME = "tcp"
STEER_ATTEMPTS = 8  # dials for the wanted target worker before settling for any (each costs a connect)


@dataclass(frozen=True)
class TcpSettings:
    """What the TCP transport needs from one configuration (a reload builds new settings)."""

    key: Ed25519PrivateKey
    local_peer_id: str
    port: int
    encryption: str
    connect_timeout: float
    window: int
    congestion: str | None
    server_ctx: ssl.SSLContext | None

    @classmethod
    def build(cls, cfg: DataplaneConfig, key: Ed25519PrivateKey) -> TcpSettings:
        server_ctx = None
        if cfg.encryption == "tls":
            server_ctx = tls.server_context(key, [p.public_key for p in cfg.peers.values()])
        return cls(key=key, local_peer_id=cfg.local_peer_id, port=cfg.tunnel_port, encryption=cfg.encryption,
                   connect_timeout=cfg.connect_timeout, window=cfg.stream_window, congestion=cfg.tunnel_congestion,
                   server_ctx=server_ctx)

    @property
    def handshake_timeout(self) -> float:
        return self.connect_timeout + 2.0


class _ClientHandshaking(asyncio.Protocol):
    """Runs ``ClientHandshake`` on a fresh connection; ``done`` resolves once CONFIRM is sent."""

    def __init__(self, hs: ClientHandshake) -> None:
        self.hs = hs
        self.done: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.hs.first_message)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.done.done():
            return  # the session's first frames: kept for it in ``buffer``
        try:
            message = handshake.split_message(self.buffer)
            if message is None:
                return
            mtype, body, self.buffer = message
            assert self.transport is not None
            self.transport.write(self.hs.on_answer(mtype, body))
            self.transport.pause_reading()
            self.done.set_result(None)
        except HandshakeError as err:
            self.done.set_exception(err)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(HandshakeError(f"connection closed during the handshake ({exc or 'EOF'})",
                                                   "tunnel_failed"))


class _ServerHandshaking(asyncio.Protocol):
    """A connection on the tunnel listener until it is authenticated (or refused, or a lane)."""

    def __init__(self, owner: TcpTransport, settings: TcpSettings) -> None:
        self.owner = owner
        self.settings = settings
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.hs: ServerHandshake | None = None
        self.finished = False
        self.timer: asyncio.TimerHandle | None = None
        self.remote = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = netsock.fmt(peer) if peer else "?"
        self.timer = asyncio.get_event_loop().call_later(self.settings.handshake_timeout, self._timeout)

    def _timeout(self) -> None:
        if not self.finished:
            self._fail("setup_timeout", "the handshake took too long")

    def _fail(self, reason: str, detail: str, answer: bytes = b"") -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        self.owner.accepting.link_failed(reason, detail, self.remote)
        if self.transport is not None:
            if answer:
                self.transport.write(answer)
                self.transport.close()
            else:
                self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.finished:
            return
        try:
            while not self.finished:
                message = handshake.split_message(self.buffer)
                if message is None:
                    return
                mtype, body, self.buffer = message
                self._on_message(mtype, body)
        except HandshakeError as err:
            if err.reason == "wrong_worker":  # not a failure: the client dials again for the worker it wants
                self.finished = True
                if self.timer is not None:
                    self.timer.cancel()
                self.owner.accepting.steered()
                assert self.transport is not None
                self.transport.write(handshake.reject(err.reason))
                self.transport.close()
                return
            reason = "tunnel_auth_failed" if err.reason != "malformed" else "malformed_handshake"
            self._fail(reason, str(err), handshake.reject(err.reason))

    def _on_message(self, mtype: int, body: bytes) -> None:
        assert self.transport is not None
        if self.hs is None:
            if mtype == handshake.LANE and self.settings.server_ctx is None:
                self.finished = True
                if self.timer is not None:
                    self.timer.cancel()
                self.owner.lane_arrived(self.transport, body, self.buffer)
                return
            self.hs = ServerHandshake(self.settings.key, self.settings.local_peer_id, self.owner.peer_key,
                                      self.settings.window, self.owner.new_token(),
                                      worker=self.owner.worker_index, workers=self.owner.worker_count)
            answer = self.hs.on_hello(mtype, body)
            assert self.hs.hello is not None
            self._check_tls_identity(self.hs.hello.client_peer_id)
            self.transport.write(answer)
            return
        keys = self.hs.on_confirm(mtype, body)
        assert self.hs.hello is not None
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        self.transport.pause_reading()
        ssl_object = self.transport.get_extra_info("ssl_object")
        link = Established(
            transport=self.transport, hello=self.hs.hello, keys=keys, token=self.hs._token,
            peer_window=self.hs.peer_window, mac=None if ssl_object else handshake.control_mac(keys, client=False),
            encrypted=ssl_object is not None, leftover=self.buffer,
            resumed=bool(ssl_object is not None and ssl_object.session_reused))
        self.buffer = b""
        self.owner.accepting.link_established(link, NAME)

    def _check_tls_identity(self, client_peer_id: str) -> None:
        """Over TLS the certificate's key must be the key of the peer the HELLO names."""
        assert self.transport is not None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        try:
            presented = tls.peer_public_key(ssl_object.getpeercert(binary_form=True))
        except tls.PeerAuthError as err:
            raise HandshakeError(str(err), "unknown_peer") from None
        if presented != self.owner.peer_key(client_peer_id):
            raise HandshakeError(f"the TLS certificate is not {client_peer_id}'s key", "unknown_peer")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.finished = True
            if self.timer is not None:
                self.timer.cancel()
            if self.hs is not None or exc is not None:  # a bare probe (connect, close) is not worth a line
                self.owner.accepting.link_failed("tunnel_failed", f"closed during the handshake ({exc or 'EOF'})",
                                                 self.remote)


class TcpTransport:
    """Dials and accepts sessions over TCP for one worker; ``update`` swaps in a new configuration."""

    name = NAME

    def __init__(self, accepting: Accepting, worker_index: int, worker_count: int = 1,
                 lane_handler: Callable[[asyncio.Transport, bytes, bytes], None] | None = None) -> None:
        self.accepting = accepting
        self.worker_index = worker_index
        self.worker_count = worker_count
        self.lane_handler = lane_handler
        self.settings: TcpSettings | None = None  # type: ignore[assignment]
        self._peer_keys: dict[str, bytes] = {}
        self._client_ctxs: dict[bytes, ssl.SSLContext] = {}

    def update(self, cfg: DataplaneConfig, settings: TcpSettings) -> None:
        self.settings = settings
        self._peer_keys = {p.peer_id: p.public_key for p in cfg.peers.values()}
        if settings.server_ctx is None:
            self._client_ctxs.clear()

    def peer_key(self, peer_id: str) -> bytes | None:
        return self._peer_keys.get(peer_id)

    def new_token(self) -> bytes:
        """A session token: which worker holds the session and how many there are, then random bytes."""
        return bytes([self.worker_index & 0xFF, self.worker_count & 0xFF]) + os.urandom(handshake.TOKEN_SIZE - 2)

    def listen(self, sock: socket.socket) -> TunnelListener:
        """Serve the tunnel port on ``sock`` (a listening socket) until the returned listener is closed."""
        return TunnelListener(self, sock)

    async def _accepted(self, sock: socket.socket, remote: str) -> None:
        """TLS (with the context of the configuration in force now), then the handshake protocol."""
        settings = self.settings
        assert settings is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: _ServerHandshaking(self, settings), sock,
                                               ssl=settings.server_ctx,
                                               ssl_handshake_timeout=settings.handshake_timeout
                                               if settings.server_ctx else None)
        except (TimeoutError, OSError, ssl.SSLError) as err:
            sock.close()
            self.accepting.link_failed("tunnel_auth_failed", f"TLS handshake: {err or 'timed out'}", remote)

    def lane_arrived(self, transport: asyncio.Transport, body: bytes, leftover: bytes) -> None:
        if self.lane_handler is None:
            transport.abort()
            return
        self.lane_handler(transport, body, leftover)

    def _client_ctx(self, peer: PeerConfig) -> ssl.SSLContext:
        ctx = self._client_ctxs.get(peer.public_key)
        if ctx is None:
            assert self.settings is not None
            ctx = self._client_ctxs[peer.public_key] = tls.client_context(self.settings.key, peer.public_key)
        return ctx

    async def dial(self, peer: PeerConfig, hello: Hello, *, priority: int) -> Established:
        """Open an authenticated session link to ``peer``, on the target worker ``hello.want`` asks for if a few
        attempts get there (else on any); raises HandshakeError or OSError (with a reason)."""
        return await dial_steered(lambda h: self._dial_once(peer, h, priority=priority), hello, STEER_ATTEMPTS)

    async def _dial_once(self, peer: PeerConfig, hello: Hello, *, priority: int) -> Established:
        settings = self.settings
        assert settings is not None
        loop = asyncio.get_running_loop()
        try:
            sock = netsock.tunnel_socket(peer.tunnel_address, priority=priority, congestion=settings.congestion)
        except OSError:  # e.g. the congestion control is not in this kernel: use the default
            sock = netsock.tunnel_socket(peer.tunnel_address, priority=priority)
        transport: asyncio.Transport | None = None
        try:
            try:
                await netsock.connect(sock, (peer.tunnel_address, settings.port), settings.connect_timeout)
            except (TimeoutError, OSError) as err:
                raise HandshakeError(f"cannot connect to {netsock.fmt((peer.tunnel_address, settings.port))}: "
                                     f"{err or 'timed out'}", "tunnel_connect_failed") from None
            hs = ClientHandshake(settings.key, hello, peer.public_key)
            protocol = _ClientHandshaking(hs)
            ssl_ctx = self._client_ctx(peer) if settings.server_ctx is not None else None
            try:
                transport, _ = await asyncio.wait_for(loop.create_connection(
                    lambda: protocol, sock=sock, ssl=ssl_ctx, server_hostname=tls.PEER_NAME if ssl_ctx else None,
                    ssl_handshake_timeout=settings.handshake_timeout if ssl_ctx else None),
                    settings.handshake_timeout)
                await asyncio.wait_for(protocol.done, settings.handshake_timeout)
            except (TimeoutError, OSError, ssl.SSLError) as err:
                raise HandshakeError(f"{'TLS ' if ssl_ctx else ''}handshake with {peer.peer_id} failed: "
                                     f"{err or 'timed out'}", "tunnel_auth_failed") from None
            assert hs.keys is not None
            return Established(transport=transport, hello=hello, keys=hs.keys, token=hs.token,
                               peer_window=hs.peer_window,
                               mac=None if ssl_ctx else handshake.control_mac(hs.keys, client=True),
                               encrypted=ssl_ctx is not None, leftover=protocol.buffer)
        except BaseException:
            if transport is not None:
                transport.abort()
            else:
                sock.close()
            raise

    async def dial_lane(self, peer: PeerConfig, first_message: bytes, *, priority: int) -> socket.socket:
        """A plaintext connection for a zero-copy lane: connected, first message sent; the raw socket."""
        settings = self.settings
        assert settings is not None
        loop = asyncio.get_running_loop()
        try:
            sock = netsock.tunnel_socket(peer.tunnel_address, priority=priority, congestion=settings.congestion)
        except OSError:
            sock = netsock.tunnel_socket(peer.tunnel_address, priority=priority)
        try:
            await netsock.connect(sock, (peer.tunnel_address, settings.port), settings.connect_timeout)
            await asyncio.wait_for(loop.sock_sendall(sock, first_message), settings.connect_timeout)
        except BaseException:
            sock.close()
            raise
        return sock


def describe_settings(settings: TcpSettings) -> dict[str, Any]:
    return {"port": settings.port, "encryption": settings.encryption, "congestion": settings.congestion}


class TunnelListener:
    """Accepts on the tunnel port itself (not ``create_server``): each connection is handed over to TLS or the
    handshake with the settings in force when it arrived, so a reload never has to reopen the port."""

    BATCH = 64

    def __init__(self, transport: TcpTransport, sock: socket.socket) -> None:
        self.transport = transport
        self.sock = sock
        sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._accept)
        self.closed = False

    def _accept(self) -> None:
        for _ in range(self.BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. EMFILE: leave it queued, say so (throttled by the listener's caller)
                self.transport.accepting.link_failed("accept_failed", str(err), "?")
                return
            conn.setblocking(False)
            netsock.tune_stream(conn)
            congestion = self.transport.settings.congestion if self.transport.settings else None
            if congestion:  # what this end sends (the reverse direction) uses the same congestion control
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, netsock.TCP_CONGESTION, congestion.encode())
            self.loop.create_task(self.transport._accepted(conn, netsock.fmt(addr)))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
