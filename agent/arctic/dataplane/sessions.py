"""The source side's sessions: opened ahead of need, kept up, re-established with back-off.

Granularity: one session per (target peer, service, QoS slot), per worker. Why per service and slot rather
than one per peer: bandwidth limits are HTB classes chosen by the tunnel socket's SO_PRIORITY (``netconf.qos``),
and a TCP connection has one priority, so each service needs its own sessions; and HTB shares a limit fairly
between busy *slots*, so the streams of a limited service each get a session (slot) of their own while there
are free slots (``bandwidth_limit_mbps`` > 0), which keeps flows fair even when the kernel spreads them unevenly
over the workers. An unlimited service uses one session per worker (its first slot): a new connection then costs
one frame, never a handshake. Workers use disjoint slots (worker w: slots w, w+N, ...).

A group's first session is dialed as soon as the service is configured. When it drops, the next attempt is
immediate, then after 0.25, 0.5, 1, 2, 5 s (max). A connection that arrives while the group has no session
waits for the dial in progress (``connect_timeout`` at most), or is refused at once after a recent failure, so
a client never hangs on a dead peer. Extra slot sessions close after ``EXTRA_IDLE`` seconds without streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import netsock
from .config import DataplaneConfig, PeerConfig, ServiceConfig
from .handshake import HandshakeError, Hello
from .session import Session
from .transports import Established

if TYPE_CHECKING:
    from .streams import Stream

BACKOFF = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
RETRY_ON_DEMAND_AFTER = 1.0  # a connection arriving this long after the last failure triggers a new attempt
EXTRA_IDLE = 60.0
SLOTS = 16  # HTB slots per service (netconf.qos_model.DEFAULT_SLOTS)

Waiter = Callable[[Session | None, str], None]


class SessionGroup:
    """The sessions of one (peer, service) in this worker."""

    def __init__(self, pool: SessionPool, peer: PeerConfig, service: ServiceConfig) -> None:
        self.pool = pool
        self.peer = peer
        self.service = service
        self.slots = pool.slots_of_worker()
        self.sessions: dict[int, Session] = {}
        self.dialing: dict[int, asyncio.Task] = {}
        self.waiters: dict[int, list[Waiter]] = {}
        self.failures = 0
        self.last_failure = 0.0
        self.last_error = ""
        self.retry: asyncio.TimerHandle | None = None
        self.retired = False
        self.reconnects = 0
        self.ever_up = False
        self.last_logged = ""

    @property
    def primary(self) -> int:
        return self.slots[0]

    # --- choosing a session for a new stream ---------------------------------------------------------------------

    def pick(self, waiter: Waiter) -> Session | None:
        """A session for a new stream now, or None: then ``waiter(session or None, reason)`` is called later
        (or already was, with a refusal)."""
        open_sessions = [s for s in self.sessions.values() if s.accepting_streams]
        if self.service.bandwidth_limit_mbps > 0:
            return self._pick_slot(open_sessions, waiter)
        if open_sessions:
            return open_sessions[0]
        return self._wait_for_primary(waiter)

    def _pick_slot(self, open_sessions: list[Session], waiter: Waiter) -> Session | None:
        """Limited service: an idle slot session, else a new slot, else share the least busy one."""
        least = min(open_sessions, key=lambda s: len(s.streams), default=None)
        if least is not None and not least.streams:
            return least
        free = next((slot for slot in self.slots if slot not in self.sessions and slot not in self.dialing), None)
        if free is not None and (least is None or not self.failures):
            self._wait(free, waiter)
            return None
        if least is not None:
            return least
        if self.dialing:
            slot = min(self.dialing, key=lambda s: len(self.waiters.get(s, ())))
            self._wait(slot, waiter)
            return None
        return self._wait_for_primary(waiter)

    def _wait_for_primary(self, waiter: Waiter) -> None:
        """No session: wait for the dial in progress, or start one unless a failure was very recent."""
        if self.primary in self.dialing or time.monotonic() - self.last_failure >= RETRY_ON_DEMAND_AFTER:
            self._wait(self.primary, waiter)
            return None
        waiter(None, f"no session to {self.peer.peer_id}: {self.last_error or 'not connected'}")
        return None

    def _wait(self, slot: int, waiter: Waiter) -> None:
        self.waiters.setdefault(slot, []).append(waiter)
        self.dial(slot)

    # --- dialing -------------------------------------------------------------------------------------------------

    def dial(self, slot: int) -> None:
        if self.retired or slot in self.sessions or slot in self.dialing:
            return
        if slot == self.primary and self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self.dialing[slot] = asyncio.get_running_loop().create_task(self._dial(slot))

    async def _dial(self, slot: int) -> None:
        pool = self.pool
        hello = Hello(client_peer_id=pool.local_peer_id, server_peer_id=self.peer.peer_id,
                      service_id=self.service.id, slot=slot, window=pool.cfg.stream_window, want=slot)
        try:
            link = await self.transport.dial(self.peer, hello, priority=self.service.priority_of_slot(slot))
        except (HandshakeError, OSError) as err:
            reason = err.reason if isinstance(err, HandshakeError) else "tunnel_connect_failed"
            self._dial_failed(slot, reason, str(err))
            return
        finally:
            self.dialing.pop(slot, None)
        if self.retired:
            link.transport.abort()
            self._release_waiters(slot, None, "the service is no longer configured")
            return
        session = self._start(link, slot)
        if self.failures or not self.ever_up:
            pool.log.info("session up", peer=self.peer.peer_id, service=self.service.id, slot=slot,
                          transport=session.transport_name, encrypted=session.encrypted,
                          after_failures=self.failures)
        self.failures = 0
        self.last_error = ""
        self.ever_up = True
        self._release_waiters(slot, session, "")

    def _start(self, link: Established, slot: int) -> Session:
        pool = self.pool
        session = Session(owner=pool, role="client", local_peer_id=pool.local_peer_id, peer_id=self.peer.peer_id,
                          service_id=self.service.id, slot=slot, token=link.token, mac=link.mac,
                          window=pool.cfg.stream_window, peer_window=link.peer_window,
                          max_window=pool.cfg.stream_window_max,
                          transport_name=self.transport.name, encrypted=link.encrypted,
                          keepalive=pool.cfg.keepalive_interval, lane_key=link.keys.lane, log=pool.log)
        session.group = self
        self.sessions[slot] = session
        session.attach(link.transport, link.leftover)
        shape(session, self.service)
        link.transport.resume_reading()
        return session

    def _dial_failed(self, slot: int, reason: str, detail: str) -> None:
        pool = self.pool
        pool.stats.session_failures[reason] += 1
        first = self.failures == 0
        self.failures += 1
        self.last_failure = time.monotonic()
        self.last_error = detail
        if first or detail != self.last_logged:  # one line per new kind of failure, not one per attempt
            pool.log.warning("cannot open a session; retrying with back-off", peer=self.peer.peer_id,
                             service=self.service.id, slot=slot, reason=reason, error=detail)
        self.last_logged = detail
        self._release_waiters(slot, None, detail)
        if slot == self.primary:
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self.retired or self.retry is not None:
            return
        delay = BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        self.retry = asyncio.get_running_loop().call_later(delay, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.dial(self.primary)

    def _release_waiters(self, slot: int, session: Session | None, reason: str) -> None:
        waiters = self.waiters.pop(slot, [])
        if session is None and waiters:
            # another slot's session may still take them (limited services prefer a fresh slot, not only that)
            fallback = next((s for s in self.sessions.values() if s.accepting_streams), None)
            if fallback is not None:
                session, reason = fallback, ""
        for waiter in waiters:
            waiter(session, reason)

    # --- sessions ending, configuration changes ------------------------------------------------------------------

    def session_closed(self, session: Session, reason: str) -> None:
        if self.sessions.get(session.slot) is session:
            del self.sessions[session.slot]
        if self.retired:
            return
        if session.slot == self.primary:
            self.reconnects += 1
            self.pool.reconnects[self.peer.peer_id] += 1
            self.pool.log.warning("session lost; reconnecting", peer=self.peer.peer_id, service=self.service.id,
                                  slot=session.slot, reason=reason, streams_reset=len(session.streams))
            self.last_error = reason
            self._schedule_retry()

    @property
    def transport(self) -> Any:
        return self.pool.transports[self.service.transport_type]

    def update(self, service: ServiceConfig) -> None:
        """Same peer, new service settings (routes, slots, limit): reshape the live sessions."""
        self.service = service
        for session in self.sessions.values():
            shape(session, service)

    def retire(self) -> None:
        """No longer configured: no new streams; each session closes once its streams have ended."""
        self.retired = True
        if self.retry is not None:
            self.retry.cancel()
        for task in self.dialing.values():
            task.cancel()
        for slot in list(self.waiters):
            self._release_waiters(slot, None, "the service is no longer configured")
        for session in list(self.sessions.values()):
            session.going_away = True
            if not session.streams:
                session.close("service removed")

    def idle_check(self, now: float) -> None:
        for slot, session in list(self.sessions.items()):
            if slot == self.primary and not self.retired:
                continue
            if session.streams:
                session.idle_since = None
                continue
            since = session.idle_since
            if since is None:
                session.idle_since = now
            elif now - since >= EXTRA_IDLE or self.retired:
                session.close("idle")

    def describe(self) -> list[dict[str, Any]]:
        rows = [s.describe() for s in self.sessions.values()]
        if not rows:
            state = "connecting" if self.dialing else ("backoff" if self.failures else "idle")
            rows.append({"peer": self.peer.peer_id, "service": self.service.id, "slot": self.primary,
                         "role": "client", "state": state, "transport": self.transport.name,
                         "rtt_ms": None, "streams": 0, "streams_total": 0, "bytes_in": 0, "bytes_out": 0,
                         "last_error": self.last_error or None})
        for row in rows:
            row["reconnects"] = self.reconnects
        return rows


def group_key(peer: PeerConfig, service: ServiceConfig, cfg: DataplaneConfig) -> tuple:
    """What a group's sessions depend on: a change here means new sessions (the old ones retire)."""
    return (peer.peer_id, peer.tunnel_address, peer.public_key, service.id, service.transport_type,
            cfg.tunnel_port, cfg.encryption)


def shape(session: Session, service: ServiceConfig | None) -> None:
    """Give a session its service's QoS slot (SO_PRIORITY of its socket: HTB's class), buffers sized to the
    service's limit and, on transports that pace (KCP), the limit as pacing rate. Also for live sessions: a limit
    set later applies to the streams they already carry."""
    priority = service.priority_of_slot(session.slot) if service is not None else 0
    transport = session.transport
    if priority != session.priority:
        session.priority = priority
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, netsock.SO_PRIORITY, priority)
    limit = service.bandwidth_limit_mbps if service is not None else 0
    session.bound_backlog(limit)  # a reset stream's queued bytes must not hold up the slot's next stream
    if hasattr(transport, "limit"):
        transport.limit(limit)


class SessionPool:
    """Every session this worker opened as a source, by (peer, service)."""

    def __init__(self, *, transports: dict[str, Any], stats: Any, log: Any, worker_index: int,
                 worker_count: int) -> None:
        self.transports = transports  # by name: "tcp", "kcp"
        self.stats = stats
        self.log = log
        self.worker_index = worker_index
        self.worker_count = worker_count
        self.groups: dict[str, SessionGroup] = {}  # service id -> group
        self.retiring: list[SessionGroup] = []
        self.reconnects: Counter = Counter()
        self.cfg: DataplaneConfig | None = None  # type: ignore[assignment]
        self.local_peer_id = ""
        self.on_stream_requested: Callable[[Session, int, Any], None] | None = None

    def slots_of_worker(self) -> list[int]:
        count = max(1, self.worker_count)
        slots = [s for s in range(SLOTS) if s % count == self.worker_index % count]
        return slots or [self.worker_index % SLOTS]

    def update(self, cfg: DataplaneConfig) -> None:
        """Match the groups to ``cfg``: new services get a session dialed now; removed ones retire."""
        self.local_peer_id = cfg.local_peer_id
        wanted: dict[str, tuple[PeerConfig, ServiceConfig]] = {}
        for service in cfg.services:
            if service.source_peer_id != cfg.local_peer_id:
                continue
            peer = cfg.peers.get(service.target_peer_id)
            if peer is None or peer.peer_id == cfg.local_peer_id:
                continue
            wanted[service.id] = (peer, service)
        old_cfg, self.cfg = self.cfg, cfg
        for sid, group in list(self.groups.items()):
            target = wanted.get(sid)
            if target is None or group_key(*target, cfg) != group_key(group.peer, group.service, old_cfg):
                group.retire()
                del self.groups[sid]
                if group.sessions:
                    self.retiring.append(group)
            else:
                group.update(target[1])
        for sid, (peer, service) in wanted.items():
            if sid not in self.groups:
                group = self.groups[sid] = SessionGroup(self, peer, service)
                group.dial(group.primary)

    def group(self, service_id: str) -> SessionGroup | None:
        return self.groups.get(service_id)

    # SessionOwner (what a session tells its owner)
    def session_closed(self, session: Session, reason: str) -> None:
        group: SessionGroup = session.group
        group.session_closed(session, reason)
        if group.retired and not group.sessions and group in self.retiring:
            self.retiring.remove(group)

    def stream_requested(self, session: Session, stream_id: int, opening: Any) -> None:
        session.close("a target peer tried to open a stream on a source's session", abort=True)

    def lane_moved(self, session: Session, stream: Stream, lane_id: int) -> None:
        session.close("a target peer sent MOVE", abort=True)

    def stream_ended(self, session: Session) -> None:
        """A stream of ``session`` ended: a session that was asked to go away closes once it is empty."""
        if session.going_away and not session.streams and not session.closed:
            session.close("drained")

    def housekeeping(self) -> None:
        now = time.monotonic()
        for group in list(self.groups.values()) + self.retiring:
            group.idle_check(now)

    def all_sessions(self) -> list[Session]:
        return [s for g in list(self.groups.values()) + self.retiring for s in g.sessions.values()]

    def close_all(self, reason: str) -> None:
        for group in list(self.groups.values()) + self.retiring:
            group.retire()
            for session in list(group.sessions.values()):
                session.close(reason)

    def describe(self) -> list[dict[str, Any]]:
        return [row for g in list(self.groups.values()) + self.retiring for row in g.describe()]
