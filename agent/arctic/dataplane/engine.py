"""The TCP data plane engine: TPROXY source side, tunnel target side, live reload and drain.

Source side (this peer is a service's source): the kernel diverts a client's TCP connection to the TPROXY
listener; ``getsockname()`` is the original destination. The winning route (``precedence`` order across all our
services) names the service; we open a tunnel stream to the target peer, send the signed header, wait for the
1-byte verdict, then relay. Any failure resets the client at once, so it never waits on a dead path.

Target side: a tunnel stream arrives, TLS authenticates the peer (``encryption: tls``), ``admission.admit``
checks the header, we connect to the destination (from our own address, the service's ``bind_address``, or the
client's address in Transparent Mode), answer the verdict and relay.

Configuration lives in an immutable ``Snapshot``; a reload swaps the reference, so relays already running keep
what they started with and only new connections see the change. Listeners whose address is unchanged stay open.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arctic.logs import SubsystemLogger, get_logger

from . import netsock, tls
from .admission import TIMESTAMP_WINDOW_MS, Refused, admit
from .channels import PlainChannel, StreamClosed, TlsChannel, TruncatedStream
from .config import CARRIED_TRANSPORTS, ConfigError, DataplaneConfig, PeerConfig, default_stats_path, load_config
from .header import (
    PREFIX,
    STATUS_CONNECT_FAILED,
    STATUS_OK,
    STATUS_REFUSED,
    HeaderError,
    decode_header,
    encode_header,
    header_length,
)
from .keys import IdentityKeyError, load_identity_key, raw_public_key
from .relay import ABORT_GRACE, Relay
from .replay import ReplayCache
from .slots import SlotPicker
from .stats import Stats, write_json_atomic
from .workers import WorkerPool

STATUS_GRACE = 2.0  # extra seconds the source waits for the verdict beyond the target's own connect timeout


class ConnectionRefused(Exception):
    """Internal: this connection is refused for ``reason`` (a stable stats key)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason, self.detail = reason, detail or reason


@dataclass
class Snapshot:
    """One loaded configuration and everything derived from it; never mutated after it is published."""

    cfg: DataplaneConfig
    generation: int
    key: Ed25519PrivateKey
    public_key: bytes
    server_ctx: ssl.SSLContext | None
    _client_ctxs: dict[str, ssl.SSLContext] = field(default_factory=dict)
    _sessions: dict[str, ssl.SSLSession] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client_ctx(self, peer: PeerConfig) -> ssl.SSLContext:
        with self._lock:
            ctx = self._client_ctxs.get(peer.peer_id)
            if ctx is None:
                ctx = self._client_ctxs[peer.peer_id] = tls.client_context(self.key, peer.public_key)
            return ctx

    def session_for(self, peer_id: str) -> ssl.SSLSession | None:
        """The latest TLS session with this peer that has a ticket (the next tunnel resumes it), if any."""
        return self._sessions.get(peer_id)

    def remember_session(self, peer_id: str, session: ssl.SSLSession | None) -> None:
        if session is not None and session.has_ticket:
            self._sessions[peer_id] = session


class SetupWatchdog:
    """Bounds the time a connection may spend being set up (TLS handshake, header, verdict).

    Socket timeouts bound each read, not the whole exchange: a peer dripping one byte every few seconds could
    hold a thread for an hour. One thread checks every deadline and shuts expired sockets down, which makes the
    blocked setup fail at once.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="setup-watchdog", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket, seconds: float) -> int:
        token = next(self._ids)
        with self._lock:
            self._watched[token] = (time.monotonic() + seconds, sock)
        return token

    def release(self, token: int | None) -> bool:
        """Stop watching; True if the deadline had already fired (the failure was our doing)."""
        if token is None:
            return False
        with self._lock:
            self._watched.pop(token, None)
            if token in self._expired:
                self._expired.discard(token)
                return True
        return False

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self._lock:
                due = [(t, s) for t, (deadline, s) in self._watched.items() if deadline <= now]
                for token, _sock in due:
                    del self._watched[token]
                    self._expired.add(token)
            for _token, sock in due:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Listener:
    """A listening socket and the thread that accepts from it; ``spec`` is what it was opened for."""

    def __init__(self, name: str, spec: tuple, sock: socket.socket,
                 handler: Callable[[socket.socket], None], pool: WorkerPool) -> None:
        self.name, self.spec, self.sock, self.handler, self.pool = name, spec, sock, handler, pool
        self.address = sock.getsockname()
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"accept-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.sock.close()
        self._thread.join(2)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                if self._closing:
                    return
                time.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            try:
                self.pool.submit(functools.partial(self.handler, conn))
            except RuntimeError:
                netsock.reset_close(conn)


class Dataplane:
    def __init__(self, config_path: str | Path, log: SubsystemLogger | None = None) -> None:
        self.config_path = Path(config_path)
        self.log = log or get_logger("tproxymgr")
        self.snapshot: Snapshot | None = None
        self.stats = Stats()
        self.replay = ReplayCache(window_ms=TIMESTAMP_WINDOW_MS, max_entries=100_000)
        self.watchdog = SetupWatchdog()
        self.listeners: dict[str, Listener] = {}
        self.relays: set[Relay] = set()
        self.workers = WorkerPool("conn")
        self.slots = SlotPicker()
        self.draining = False
        self.hurry = False  # a second SIGTERM: stop draining now
        self.config_error: str | None = None
        self._relays_lock = threading.Lock()
        self._generation = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._config_stamp: tuple | None = None
        self._reload_lock = threading.Lock()
        self._stats_failing = False

    # --- configuration ------------------------------------------------------------------------------------------

    def _stamp(self) -> tuple | None:
        try:
            st = self.config_path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _build_snapshot(self) -> Snapshot:
        stamp = self._stamp()
        cfg = load_config(self.config_path)
        key = load_identity_key(cfg.identity_key_file)
        public = raw_public_key(key)
        me = cfg.peers.get(cfg.local_peer_id)
        if me is not None and me.public_key != public:
            raise ConfigError(f"peers.{cfg.local_peer_id}.public_key does not match the identity key "
                              f"{cfg.identity_key_file}")
        server_ctx = None
        if cfg.encryption == "tls":
            server_ctx = tls.server_context(key, [p.public_key for p in cfg.peers.values()])
        self._config_stamp = stamp
        return Snapshot(cfg=cfg, generation=next(self._generation), key=key, public_key=public,
                        server_ctx=server_ctx)

    def start(self) -> None:
        """Load the config and open the listeners; raises ConfigError/IdentityKeyError/OSError on failure."""
        snap = self._build_snapshot()
        opened = self._open_listeners(snap)
        self.snapshot = snap
        self._swap_listeners(opened)
        self.log.info("data plane started", **self._describe(snap))

    def reload(self, why: str) -> bool:
        """Swap in the config on disk; on any error keep running the old one (and say why)."""
        with self._reload_lock:
            stamp = self._stamp()
            try:
                snap = self._build_snapshot()
                opened = self._open_listeners(snap)
            except (ConfigError, IdentityKeyError, OSError, ssl.SSLError, ValueError) as err:
                self._config_stamp = stamp  # do not retry (and re-log) until the file changes again
                self.config_error = str(err)
                self.log.error("config reload refused, keeping the running config", trigger=why, error=str(err))
                return False
            self.snapshot = snap
            self._swap_listeners(opened)
            self.config_error = None
            self.log.info("config reloaded", trigger=why, **self._describe(snap))
            return True

    def config_changed(self) -> bool:
        return self._stamp() != self._config_stamp

    @staticmethod
    def _describe(snap: Snapshot) -> dict:
        cfg = snap.cfg
        return {"generation": snap.generation, "peer_id": cfg.local_peer_id, "encryption": cfg.encryption,
                "services": len(cfg.services), "source_routes": len(cfg.source_routes),
                "tproxy_port": cfg.tproxy_port, "tunnel": f"{cfg.tunnel_bind}:{cfg.tunnel_port}"}

    def _open_listeners(self, snap: Snapshot) -> dict[str, Listener]:
        """Open (not start) the listeners ``snap`` needs and we do not have yet; all or nothing."""
        cfg = snap.cfg
        wanted: dict[str, tuple] = {
            "tproxy4": ("tproxy", socket.AF_INET, cfg.tproxy_port),
            "tproxy6": ("tproxy", socket.AF_INET6, cfg.tproxy_port),
            "tunnel": ("tunnel", cfg.tunnel_bind, cfg.tunnel_port),
        }
        opened: dict[str, Listener] = {}
        try:
            for name, spec in wanted.items():
                current = self.listeners.get(name)
                if current is not None and current.spec == spec:
                    continue
                try:
                    try:
                        sock = self._listen(spec)
                    except OSError as err:
                        if err.errno != errno.EADDRINUSE or current is None or current.spec[2] != spec[2]:
                            raise
                        # same port, other address (e.g. 0.0.0.0 -> 198.18.0.2): the old one must go first
                        self.listeners.pop(name).close()
                        sock = self._listen(spec)
                except OSError as err:
                    if name == "tproxy6" and err.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                        self.log.warning("IPv6 TPROXY listener unavailable (no IPv6 here)", error=str(err))
                        continue
                    raise OSError(err.errno, f"cannot listen for {name} on port {spec[2]}: {err.strerror}") from None
                handler = self._handle_intercepted if spec[0] == "tproxy" else self._handle_tunnel
                opened[name] = Listener(name, spec, sock, handler, self.workers)
        except BaseException:
            for listener in opened.values():
                listener.sock.close()
            raise
        return opened

    @staticmethod
    def _listen(spec: tuple) -> socket.socket:
        if spec[0] == "tproxy":
            return netsock.tproxy_listener(spec[1], spec[2])
        return netsock.tcp_listener(spec[1], spec[2])

    def _swap_listeners(self, opened: dict[str, Listener]) -> None:
        """Start the new listeners and close the ones they replace (same-address listeners are untouched)."""
        for name, listener in opened.items():
            old = self.listeners.pop(name, None)
            if old is not None:
                old.close()
            self.listeners[name] = listener
            listener.start()
            self.log.info("listening", listener=name, address=_fmt(listener.address))

    # --- source side --------------------------------------------------------------------------------------------

    def _handle_intercepted(self, conn: socket.socket) -> None:
        snap = self.snapshot
        assert snap is not None
        cfg = snap.cfg
        conn_id = f"s{next(self._conn_ids)}"
        self.stats.opened("source")
        tunnel: socket.socket | None = None
        watch: int | None = None
        src = dst = ("?", 0)
        service_id = None
        slot = 0
        try:
            dst, src = conn.getsockname()[:2], conn.getpeername()[:2]
            if dst[1] == cfg.tproxy_port and netsock.is_local_address(dst[0]):
                raise ConnectionRefused("direct_connection", "connection addressed to the TPROXY port itself")
            match = cfg.route_for(src[0], dst[0])
            if match is None:
                raise ConnectionRefused("no_route", "no route of any service matches")
            route, service = match
            service_id = service.id
            if service.transport_type not in CARRIED_TRANSPORTS:
                raise ConnectionRefused("transport_unavailable",
                                        f"transport {service.transport_type} is not served by this data plane")
            peer = cfg.peers.get(service.target_peer_id)
            if peer is None or peer.peer_id == cfg.local_peer_id:
                raise ConnectionRefused("unknown_target_peer", f"target peer {service.target_peer_id} not configured")
            slot = self.slots.take(service.slot_priorities)
            try:
                tunnel = netsock.connect_upstream((peer.tunnel_address, cfg.tunnel_port), cfg.connect_timeout,
                                                  priority=slot)
            except OSError as err:
                raise ConnectionRefused("tunnel_connect_failed", f"tunnel to {peer.peer_id}: {err}") from None
            tunnel.settimeout(cfg.connect_timeout + STATUS_GRACE)
            watch = self.watchdog.watch(tunnel, 2 * cfg.connect_timeout + STATUS_GRACE)
            channel = self._open_source_channel(snap, tunnel, peer)
            channel.sendall(encode_header(
                snap.key, service_id=service.id, signer_peer_id=cfg.local_peer_id, src=src, dst=dst,
                transparent=service.fully_transparent))
            status = channel.recv_exact(1)[0]
            if status != STATUS_OK:
                reason = "target_connect_failed" if status == STATUS_CONNECT_FAILED else "target_refused"
                raise ConnectionRefused(reason, f"target peer {peer.peer_id} answered status {status}")
            if isinstance(channel, TlsChannel):  # its ticket arrived before the status byte
                snap.remember_session(peer.peer_id, channel.session)
            if self.watchdog.release(watch):
                raise ConnectionRefused("setup_timeout", "tunnel setup took too long")
            netsock.tune_stream(conn)
            relay = Relay(conn_id, conn, channel,
                          on_close=self._relay_closed("source", service.id, src, dst, slot))
        except ConnectionRefused as refusal:
            self.slots.release(slot)
            if self.watchdog.release(watch):
                refusal = ConnectionRefused("setup_timeout", f"tunnel setup took too long ({refusal.detail})")
            self._refuse("source", conn_id, refusal, conn, tunnel, src=src, dst=dst, service=service_id)
            return
        except (OSError, StreamClosed, TruncatedStream, ssl.SSLError) as err:
            self.slots.release(slot)
            reason = "setup_timeout" if self.watchdog.release(watch) else "tunnel_failed"
            self._refuse("source", conn_id, ConnectionRefused(reason, f"{type(err).__name__}: {err}"),
                         conn, tunnel, src=src, dst=dst, service=service_id)
            return
        self.stats.service_relay_started("source", service.id)
        self.log.debug("relaying", conn=conn_id, side="source", src=_fmt(src), dst=_fmt(dst), service=service.id,
                       route=route.id, peer=peer.peer_id)
        self._run_relay(relay)

    def _open_source_channel(self, snap: Snapshot, tunnel: socket.socket,
                             peer: PeerConfig) -> PlainChannel | TlsChannel:
        if snap.cfg.encryption != "tls":
            return PlainChannel(tunnel)
        channel = TlsChannel(tunnel, snap.client_ctx(peer), server_side=False, session=snap.session_for(peer.peer_id))
        try:
            key = channel.handshake()
        except (ssl.SSLError, OSError, TruncatedStream) as err:
            raise ConnectionRefused("tunnel_auth_failed", f"TLS with {peer.peer_id}: {err}") from None
        if key != peer.public_key:
            raise ConnectionRefused("tunnel_auth_failed", f"{peer.peer_id} presented another key")
        return channel

    # --- target side ----------------------------------------------------------------------------------------------

    def _handle_tunnel(self, sock: socket.socket) -> None:
        snap = self.snapshot
        assert snap is not None
        cfg = snap.cfg
        conn_id = f"t{next(self._conn_ids)}"
        self.stats.opened("target")
        peer_addr = ("?", 0)
        upstream: socket.socket | None = None
        channel: PlainChannel | TlsChannel | None = None
        header = None
        slot = 0
        watch: int | None = self.watchdog.watch(sock, cfg.connect_timeout + STATUS_GRACE)
        try:
            peer_addr = sock.getpeername()[:2]
            sock.settimeout(cfg.connect_timeout + STATUS_GRACE)
            netsock.tune_stream(sock)
            tls_peer_id = None
            if snap.server_ctx is not None:
                channel = TlsChannel(sock, snap.server_ctx, server_side=True)
                try:
                    key = channel.handshake()
                except (ssl.SSLError, OSError, TruncatedStream) as err:
                    raise ConnectionRefused("tunnel_auth_failed", f"TLS handshake: {err}") from None
                tls_peer = cfg.peer_by_key(key)
                if tls_peer is None:
                    raise ConnectionRefused("tunnel_auth_failed", "TLS peer key is not a configured peer")
                self.stats.tls_handshake(channel.resumed)
                tls_peer_id = tls_peer.peer_id
            else:
                channel = PlainChannel(sock)
            prefix = channel.recv_exact(PREFIX.size)
            try:
                header = decode_header(prefix + channel.recv_exact(header_length(prefix) - PREFIX.size))
            except HeaderError as err:
                raise ConnectionRefused(err.reason, str(err)) from None
            verdict = admit(header, cfg, self.replay, now_ms=int(time.time() * 1000), tls_peer_id=tls_peer_id)
            if isinstance(verdict, Refused):
                raise ConnectionRefused(verdict.reason, verdict.detail)
            if self.watchdog.release(watch):
                raise ConnectionRefused("setup_timeout", "handshake and header took too long")
            watch = None
            service = verdict.service
            slot = self.slots.take(service.slot_priorities)
            netsock.set_priority(sock, slot)
            bind_ip = header.src_ip if verdict.transparent else service.bind_address
            try:
                upstream = netsock.connect_upstream((header.dst_ip, header.dst_port), cfg.connect_timeout,
                                                    bind_ip=bind_ip, transparent=verdict.transparent)
            except OSError as err:
                with contextlib.suppress(OSError):
                    channel.sendall(bytes([STATUS_CONNECT_FAILED]))
                raise ConnectionRefused("connect_failed", f"{_fmt((header.dst_ip, header.dst_port))}: {err}") from None
            channel.sendall(bytes([STATUS_OK]))
            relay = Relay(conn_id, upstream, channel, on_close=self._relay_closed(
                "target", service.id, (header.src_ip, header.src_port), (header.dst_ip, header.dst_port), slot))
        except ConnectionRefused as refusal:
            self.slots.release(slot)
            if self.watchdog.release(watch):
                refusal = ConnectionRefused("setup_timeout", f"handshake and header took too long ({refusal.detail})")
            if channel is not None and refusal.reason not in ("tunnel_auth_failed", "connect_failed"):
                with contextlib.suppress(OSError):
                    channel.sendall(bytes([STATUS_REFUSED]))
            fields = {"tunnel_peer": _fmt(peer_addr)}
            if header is not None:
                fields.update(src=_fmt((header.src_ip, header.src_port)), dst=_fmt((header.dst_ip, header.dst_port)),
                              service=header.service_id, signer=header.signer_peer_id)
            self._refuse("target", conn_id, refusal, None, sock, graceful=True, **fields)
            netsock.reset_close(upstream)
            return
        except (OSError, StreamClosed, TruncatedStream, ssl.SSLError) as err:
            self.slots.release(slot)
            reason = "setup_timeout" if self.watchdog.release(watch) else "tunnel_failed"
            self._refuse("target", conn_id, ConnectionRefused(reason, f"{type(err).__name__}: {err}"),
                         None, sock, tunnel_peer=_fmt(peer_addr))
            netsock.reset_close(upstream)
            return
        self.stats.service_relay_started("target", service.id)
        self.log.debug("relaying", conn=conn_id, side="target", src=_fmt((header.src_ip, header.src_port)),
                       dst=_fmt((header.dst_ip, header.dst_port)), service=service.id,
                       transparent=verdict.transparent)
        self._run_relay(relay)

    # --- shared -----------------------------------------------------------------------------------------------------

    def _refuse(self, side: str, conn_id: str, refusal: ConnectionRefused, local: socket.socket | None,
                tunnel: socket.socket | None, *, graceful: bool = False, **fields) -> None:
        """Count and log a refusal, then close: RST towards the client; the tunnel after the verdict byte."""
        self.stats.refused(side, refusal.reason)
        self.log.warning("connection refused", conn=conn_id, side=side, reason=refusal.reason,
                         detail=refusal.detail, **{k: v for k, v in fields.items() if v is not None})
        netsock.reset_close(local)
        if tunnel is not None:
            if graceful:
                with contextlib.suppress(OSError):
                    tunnel.shutdown(socket.SHUT_WR)  # let the verdict byte arrive before we go
                with contextlib.suppress(OSError):
                    tunnel.close()
            else:
                netsock.reset_close(tunnel)
        self.stats.closed(side)

    def _relay_closed(self, side: str, service_id: str, src: tuple, dst: tuple,
                      slot: int) -> Callable[[Relay], None]:
        def closed(relay: Relay) -> None:
            with self._relays_lock:
                self.relays.discard(relay)
            self.slots.release(slot)
            self.stats.closed(side, to_tunnel=relay.to_tunnel, from_tunnel=relay.from_tunnel, service_id=service_id)
            fields = {"conn": relay.name, "side": side, "service": service_id, "src": _fmt(src), "dst": _fmt(dst),
                      "to_tunnel": relay.to_tunnel, "so_priority": slot,
                      "from_tunnel": relay.from_tunnel, "seconds": round(time.monotonic() - relay.started, 3)}
            if relay.aborted:
                self.log.info("connection reset", reason=relay.abort_reason, **fields)
            else:
                self.log.info("connection closed", **fields)
        return closed

    def _run_relay(self, relay: Relay) -> None:
        with self._relays_lock:
            self.relays.add(relay)
        relay.run(spawn=self.workers.submit)

    # --- running, stats and shutdown ----------------------------------------------------------------------------

    @property
    def stats_path(self) -> Path:
        snap = self.snapshot
        if snap is not None and snap.cfg.stats_file is not None:
            return snap.cfg.stats_file
        return default_stats_path(self.config_path)

    def write_stats(self) -> None:
        snap = self.snapshot
        data = self.stats.snapshot(
            config_generation=snap.generation if snap else None,
            config_error=self.config_error,
            draining=self.draining,
            listening={name: _fmt(lst.address) for name, lst in self.listeners.items()},
            local_peer_id=snap.cfg.local_peer_id if snap else None,
        )
        try:
            write_json_atomic(self.stats_path, data)
            self._stats_failing = False
        except OSError as err:
            if not self._stats_failing:  # once per outage, not every second
                self.log.warning("cannot write stats file", path=str(self.stats_path), error=str(err))
            self._stats_failing = True

    def stop_listening(self) -> None:
        for listener in list(self.listeners.values()):
            listener.close()
        self.listeners.clear()

    def drain(self, seconds: float) -> int:
        """Stop accepting, let connections finish for up to ``seconds``, reset the rest; returns how many."""
        self.draining = True
        self.stop_listening()
        self.log.info("draining", active=self.stats.active, drain_seconds=seconds)
        deadline = time.monotonic() + seconds
        while self.stats.active and time.monotonic() < deadline and not self.hurry:
            time.sleep(0.1)
            self.write_stats()
        with self._relays_lock:
            left = list(self.relays)
        for relay in left:
            relay.abort("drain timeout")
        end = time.monotonic() + ABORT_GRACE
        while any(not r.closed.is_set() for r in left) and time.monotonic() < end:
            time.sleep(0.05)
        for relay in left:
            if not relay.closed.is_set():
                relay.force()
        if left:
            self.log.warning("drain timeout: connections reset", count=len(left))
        return len(left)


def _fmt(addr) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)
