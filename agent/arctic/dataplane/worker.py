"""One worker process of the data plane: an event loop (uvloop) with its own listeners and sessions.

The master (``master``) forks one worker per CPU. Each opens its own TPROXY and tunnel listeners with
SO_REUSEPORT, so the kernel spreads intercepted connections and incoming sessions over the workers, and each
dials its own sessions to the peers it is a source for (``sessions``). No thread per connection: a stream is a
protocol object on the loop (``streams``).

Talking to the master: one Unix socket, newline-delimited JSON. The master sends ``reload`` (with the config
text it validated and its generation), ``drain`` and ``hurry``; the worker answers ``ready`` / ``failed`` once
at start, ``reloaded`` after each reload, ``stats`` every second and ``drained`` at the end. If the master goes
away, the worker drains and exits, so no orphan keeps a listener.

Configuration is an immutable ``Snapshot``: a reload swaps the reference; streams already open keep going, only
new ones see the change, and listeners whose address is unchanged stay open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arctic.logs import SubsystemLogger

from . import netsock
from .config import ConfigError, DataplaneConfig, parse_config
from .keys import IdentityKeyError, load_identity_key, raw_public_key
from .lanes import Lanes
from .logthrottle import ThrottledLog
from .sessions import SessionPool
from .source import Source
from .stats import Stats
from .target import Target
from .transitions import Transitions
from .transports import kcp
from .transports.tcp import TcpSettings, TcpTransport

STATS_EVERY = 1.0
HOUSEKEEPING_EVERY = 5.0
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class Snapshot:
    """One loaded configuration and what is derived from it; never mutated after it is published."""

    cfg: DataplaneConfig
    generation: int
    key: Ed25519PrivateKey
    public_key: bytes


def build_snapshot(text: str, base_dir: Path, generation: int) -> Snapshot:
    """Parse and check a config text; raises ConfigError or IdentityKeyError naming what is wrong."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    cfg = parse_config(raw, base_dir=base_dir)
    key = load_identity_key(cfg.identity_key_file)
    public = raw_public_key(key)
    me = cfg.peers.get(cfg.local_peer_id)
    if me is not None and me.public_key != public:
        raise ConfigError(f"peers.{cfg.local_peer_id}.public_key does not match the identity key "
                          f"{cfg.identity_key_file}")
    return Snapshot(cfg=cfg, generation=generation, key=key, public_key=public)


class WorkerLog(SubsystemLogger):
    """The tproxymgr logger, with ``worker=<index>`` on every line."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs.setdefault("worker", self.extra["worker"])
        return super().process(msg, kwargs)


@dataclass
class Listener:
    spec: tuple
    server: Any  # asyncio.AbstractServer (TPROXY) or transports.tcp.TunnelListener: both have close()
    address: str


class _Control(asyncio.Protocol):
    """The worker's end of the master's socket."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line:
                self.worker.command(json.loads(line))

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.master_gone()


class Worker:
    def __init__(self, index: int, count: int, control: socket.socket, config_path: Path,
                 base_log: SubsystemLogger) -> None:
        self.index = index
        self.count = count
        self.control_sock = control
        self.config_path = config_path
        self.log = WorkerLog(base_log.logger, {"worker": index})
        self.throttled = ThrottledLog(self.log)
        self.log_streams = self.log.isEnabledFor(logging.DEBUG)
        self.stats = Stats()
        self.snapshot: Snapshot = None  # type: ignore[assignment]  # set before anything runs
        self.listeners: dict[str, Listener] = {}
        self.draining = False
        self.hurry = False
        self.exit_code = 0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.control: asyncio.Transport | None = None
        self.source = Source(self)
        self.target = Target(self)
        self.lanes = Lanes(self)
        self.transport = TcpTransport(self.target, index, count, lane_handler=self.lanes.lane_arrived)
        self.kcp = kcp.KcpTransport(self.target, index, count, log=self.log)
        self.pool = SessionPool(transports={"tcp": self.transport, "kcp": self.kcp}, stats=self.stats, log=self.log,
                                worker_index=index, worker_count=count)
        self._reloading = asyncio.Lock()
        self._done: asyncio.Future[int] | None = None
        self.transitions: Transitions = None  # type: ignore[assignment]  # made with the event loop

    # --- running -------------------------------------------------------------------------------------------------

    def run(self, config_text: str, generation: int) -> int:
        """The whole life of the worker process; returns its exit status."""
        try:
            import uvloop
        except ImportError:  # stock asyncio works too, about half as fast
            return asyncio.run(self._main(config_text, generation))
        return uvloop.run(self._main(config_text, generation))

    async def _main(self, config_text: str, generation: int) -> int:
        self.loop = asyncio.get_running_loop()
        self.transitions = Transitions(self.loop)
        self._done = self.loop.create_future()
        self.control, _ = await self.loop.connect_accepted_socket(lambda: _Control(self), self.control_sock)
        try:
            self.snapshot = build_snapshot(config_text, self.config_path.parent, generation)
            self._apply_settings(self.snapshot)
            self._swap_listeners(await self._open_listeners(self.snapshot))
        except (ConfigError, IdentityKeyError, ssl.SSLError) as err:
            self.send({"type": "failed", "code": 2, "error": str(err)})
            return 2
        except OSError as err:
            self.send({"type": "failed", "code": 1, "error": str(err)})
            return 1
        self.pool.update(self.snapshot.cfg)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._signalled)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the master, with a validated config
        self.send({"type": "ready", "pid": os.getpid(), "listening": self.listening()})
        self.loop.call_later(STATS_EVERY, self._report)
        self.loop.call_later(HOUSEKEEPING_EVERY, self._housekeeping)
        return await self._done

    def send(self, message: dict[str, Any]) -> None:
        if self.control is not None and not self.control.is_closing():
            self.control.write(json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n")

    def command(self, message: dict[str, Any]) -> None:
        cmd = message.get("cmd")
        if cmd == "reload":
            self.loop.create_task(self.reload(message["config"], message["generation"]))
        elif cmd == "drain":
            self.loop.create_task(self.drain(float(message.get("seconds", 0))))
        elif cmd == "hurry":
            self.hurry = True

    def master_gone(self) -> None:
        self.control = None
        if not self.draining:
            self.log.warning("the data-plane master is gone: draining and exiting")
            self.loop.create_task(self.drain(self.snapshot.cfg.drain_seconds if self.snapshot else 0))

    def _signalled(self) -> None:
        if self.draining:
            self.hurry = True
        else:
            self.loop.create_task(self.drain(self.snapshot.cfg.drain_seconds))

    def _report(self) -> None:
        self.send({"type": "stats", "stats": self.stats_snapshot()})
        if not (self._done and self._done.done()):
            self.loop.call_later(STATS_EVERY, self._report)

    def _housekeeping(self) -> None:
        self.pool.housekeeping()
        if not (self._done and self._done.done()):
            self.loop.call_later(HOUSEKEEPING_EVERY, self._housekeeping)

    def stats_snapshot(self) -> dict[str, Any]:
        sessions = self.pool.describe() + [s.describe() for s in self.target.sessions]
        return self.stats.snapshot(worker=self.index, pid=os.getpid(), reported_at=round(time.time(), 3),
                                   sessions=sessions,
                                   kcp_dropped=self.kcp.dropped_totals(),
                                   reconnects=dict(self.pool.reconnects), listening=self.listening(),
                                   config_generation=self.snapshot.generation if self.snapshot else None,
                                   draining=self.draining)

    # --- configuration -------------------------------------------------------------------------------------------

    def _apply_settings(self, snap: Snapshot) -> None:
        self.transport.update(snap.cfg, TcpSettings.build(snap.cfg, snap.key))
        self.kcp.update(snap.cfg, kcp.KcpSettings.build(snap.cfg, snap.key))

    async def reload(self, config_text: str, generation: int) -> None:
        async with self._reloading:
            try:
                snap = build_snapshot(config_text, self.config_path.parent, generation)
                settings = TcpSettings.build(snap.cfg, snap.key)
                kcp_settings = kcp.KcpSettings.build(snap.cfg, snap.key)
                opened = await self._open_listeners(snap)
            except (ConfigError, IdentityKeyError, OSError, ssl.SSLError, ValueError) as err:
                self.send({"type": "reloaded", "generation": generation, "error": str(err)})
                return
            previous, self.snapshot = self.snapshot, snap
            self.transport.update(snap.cfg, settings)
            self.kcp.update(snap.cfg, kcp_settings)  # listeners read their transport's settings: old ones included
            self._swap_listeners(opened, self._wanted(snap.cfg))
            self.pool.update(snap.cfg)
            self.target.update()
            self.transitions.changed(previous.cfg)  # connections waiting for this configuration try again
            self.send({"type": "reloaded", "generation": generation, "error": None, "listening": self.listening()})

    # --- listeners -------------------------------------------------------------------------------------------------

    def _wanted(self, cfg: DataplaneConfig) -> dict[str, tuple]:
        wanted = {
            "tproxy4": ("tproxy", socket.AF_INET, cfg.tproxy_port),
            "tproxy6": ("tproxy", socket.AF_INET6, cfg.tproxy_port),
            "tunnel": ("tunnel", cfg.tunnel_bind, cfg.tunnel_port),
        }
        if any(s.transport_type == "kcp" and s.target_peer_id == cfg.local_peer_id for s in cfg.services):
            wanted["kcp"] = ("kcp", cfg.tunnel_bind, cfg.kcp_port)  # only while KCP services come to us
        return wanted

    async def _open_listeners(self, snap: Snapshot) -> dict[str, Listener]:
        """Open (and start) the listeners ``snap`` needs that we do not have yet; all or nothing."""
        opened: dict[str, Listener] = {}
        try:
            for name, spec in self._wanted(snap.cfg).items():
                current = self.listeners.get(name)
                if current is not None and current.spec == spec:
                    continue
                try:
                    sock = self._listen(name, spec, current)
                except OSError as err:
                    if name == "tproxy6" and err.errno in (97, 99):  # EAFNOSUPPORT, EADDRNOTAVAIL: no IPv6 here
                        self.log.warning("IPv6 TPROXY listener unavailable (no IPv6 here)", error=str(err))
                        continue
                    raise OSError(err.errno, f"cannot listen for {name} on port {spec[2]}: {err.strerror}") from None
                address = netsock.fmt(sock.getsockname())
                if spec[0] == "tproxy":
                    server = await self.loop.create_server(self.source.protocol, sock=sock, backlog=LISTEN_BACKLOG)
                elif spec[0] == "kcp":
                    server = await self.kcp.listen(sock)
                    address += "/udp"
                else:
                    server = self.transport.listen(sock)
                opened[name] = Listener(spec, server, address)
        except BaseException:
            for listener in opened.values():
                listener.server.close()
            raise
        return opened

    def _listen(self, name: str, spec: tuple, current: Listener | None) -> socket.socket:
        makers = {"tproxy": netsock.tproxy_listener, "tunnel": netsock.tcp_listener, "kcp": kcp.kcp_listener}

        def make() -> socket.socket:
            return makers[spec[0]](spec[1], spec[2])

        try:
            return make()
        except OSError as err:
            if err.errno != 98 or current is None or current.spec[2] != spec[2]:  # EADDRINUSE
                raise
            # same port, another address (e.g. 0.0.0.0 -> 198.18.0.2): the old one has to go first
            self.listeners.pop(name).server.close()
            return make()

    def _swap_listeners(self, opened: dict[str, Listener], wanted: dict[str, tuple] | None = None) -> None:
        for name, listener in opened.items():
            old = self.listeners.pop(name, None)
            if old is not None:
                old.server.close()
            self.listeners[name] = listener
            self.log.info("listening", listener=name, address=listener.address)
        for name in [n for n in self.listeners if wanted is not None and n not in wanted]:
            self.listeners.pop(name).server.close()  # e.g. the last KCP service is gone: no UDP socket is left
            self.log.info("stopped listening", listener=name)

    def listening(self) -> dict[str, str]:
        return {name: listener.address for name, listener in self.listeners.items()}

    # --- stopping --------------------------------------------------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """Stop accepting, let open streams finish for up to ``seconds``, reset the rest, exit."""
        if self.draining:
            return
        self.draining = True
        for listener in self.listeners.values():
            listener.server.close()
        self.listeners.clear()
        self.target.go_away("draining")
        active = sum(self.stats.active.values())
        self.log.info("draining", active=active, drain_seconds=seconds)
        deadline = self.loop.time() + seconds
        while sum(self.stats.active.values()) and self.loop.time() < deadline and not self.hurry:
            await asyncio.sleep(0.05)
        left = sum(self.stats.active.values())
        self.pool.close_all("the data plane is stopping")
        self.target.close_all("the data plane is stopping")
        self.lanes.close_all()
        if left:
            self.log.warning("drain timeout: connections reset", count=left)
        self.send({"type": "stats", "stats": self.stats_snapshot()})
        self.send({"type": "drained", "reset": left})
        await asyncio.sleep(0)  # let the last frames and messages go out
        if self._done is not None and not self._done.done():
            self._done.set_result(0)
