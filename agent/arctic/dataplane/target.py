"""The target side: accepted sessions, and for each stream the admission check and the connection onwards.

A link the transport authenticated becomes a server-side session, shaped like the source's (the session's QoS
slot gives its socket this peer's SO_PRIORITY for that service and slot, so the reverse direction is limited
too). Each OPEN is checked (``admission``: never an open proxy), then we connect to the destination from our
own address, the service interface's (``bind_address``), or, in Transparent Mode, the client's. OK goes back
once connected, REFUSE with the reason otherwise; bytes that arrived meanwhile are delivered then. While the two
peers' configurations disagree after a change, a stream waits for ours or is admitted by the one we just replaced
(``transitions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

from . import frames, netsock
from .admission import Admitted, Refused, admit
from .frames import REFUSE
from .session import Session
from .sessions import shape
from .streams import CONNECTING, Stream
from .transitions import NOT_KNOWN_YET, TARGET_WAIT
from .transports import Established

if TYPE_CHECKING:
    from .worker import Worker


class Target:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.sessions: set[Session] = set()
        self.by_token: dict[bytes, Session] = {}  # lanes find their session by its token

    # --- links from the transport (Accepting) --------------------------------------------------------------------

    def link_established(self, link: Established, transport_name: str) -> None:
        worker = self.worker
        cfg = worker.snapshot.cfg
        hello = link.hello
        if worker.draining:
            link.transport.abort()
            return
        session = Session(owner=self, role="server", local_peer_id=cfg.local_peer_id, peer_id=hello.client_peer_id,
                          service_id=hello.service_id, slot=hello.slot, token=link.token, mac=link.mac,
                          window=cfg.stream_window, peer_window=link.peer_window,
                          max_window=cfg.stream_window_max, transport_name=transport_name,
                          encrypted=link.encrypted, keepalive=cfg.keepalive_interval, lane_key=link.keys.lane,
                          log=worker.log)
        self.sessions.add(session)
        self.by_token[session.token] = session
        worker.stats.sessions_accepted += 1
        if link.encrypted:
            worker.stats.handshakes["resumed" if link.resumed else "full"] += 1
        session.attach(link.transport, link.leftover)
        self._shape(session)  # the reverse direction of the service is limited here, by this socket's priority
        link.transport.resume_reading()
        worker.log.info("session accepted", peer=session.peer_id, service=session.service_id, slot=session.slot,
                        transport=transport_name, encrypted=link.encrypted)

    def link_failed(self, reason: str, detail: str, remote: str) -> None:
        self.worker.stats.refused("target", reason)
        self.worker.throttled.warning(f"target:{reason}", "session refused", side="target", reason=reason,
                                      detail=detail, tunnel_peer=remote)

    def steered(self) -> None:
        self.worker.stats.steered += 1

    def _shape(self, session: Session) -> None:
        shape(session, self.worker.snapshot.cfg.services_by_id.get(session.service_id))

    def update(self) -> None:
        """A new configuration: re-shape the live sessions; close those of peers that are no longer ours."""
        peers = self.worker.snapshot.cfg.peers
        for session in list(self.sessions):
            if session.peer_id not in peers:
                session.close("the peer is no longer configured")
            else:
                self._shape(session)

    # --- SessionOwner ---------------------------------------------------------------------------------------------

    def session_closed(self, session: Session, reason: str) -> None:
        self.sessions.discard(session)
        self.by_token.pop(session.token, None)
        if reason in ("bad_mac", "protocol_error"):  # what only a broken or hostile peer causes
            self.worker.stats.refused("target", reason)
        if not self.worker.draining:
            self.worker.log.info("session closed", peer=session.peer_id, service=session.service_id,
                                 slot=session.slot, reason=reason, streams_reset=len(session.streams))

    def stream_requested(self, session: Session, stream_id: int, opening: frames.Open) -> None:
        worker = self.worker
        worker.stats.opened("target")
        verdict = Refused("draining", "the data plane is stopping") if worker.draining else \
            self._admit(session, opening)
        if isinstance(verdict, Refused) and verdict.reason not in NOT_KNOWN_YET:
            session.send_control(REFUSE, stream_id, frames.encode_refuse(verdict.reason, verdict.detail))
            self._refused(session, opening, verdict.reason, verdict.detail)
            worker.stats.closed("target")
            return
        stream = Stream(self)
        stream.src, stream.dst, stream.service_id, stream.slot = opening.src, opening.dst, opening.service_id, \
            session.slot
        session.accept_stream(stream, stream_id)
        stream.bind(session, stream_id, CONNECTING)
        if isinstance(verdict, Admitted):
            stream.connector = worker.loop.create_task(self._connect(stream, verdict))
        else:  # the source knows of this service or route before we do: wait for our configuration (transitions)
            worker.transitions.wait(lambda: self._admit_held(stream, opening),
                                    lambda: self._refuse_held(stream, opening, verdict), TARGET_WAIT)

    def _admit(self, session: Session, opening: frames.Open) -> Admitted | Refused:
        """The current configuration's verdict; a refusal for something not known (any more) is asked again of the
        configurations replaced in the last ``RETIRED_GRACE`` seconds: the source may not have stopped diverting."""
        worker = self.worker
        verdict = admit(opening, worker.snapshot.cfg, session_peer_id=session.peer_id,
                        session_service_id=session.service_id, session_transport=session.transport_name)
        if isinstance(verdict, Refused) and verdict.reason in NOT_KNOWN_YET:
            for cfg in worker.transitions.retired():
                earlier = admit(opening, cfg, session_peer_id=session.peer_id, session_service_id=session.service_id,
                                session_transport=session.transport_name)
                if isinstance(earlier, Admitted):
                    return earlier
        return verdict

    def _admit_held(self, stream: Stream, opening: frames.Open) -> bool:
        """After a configuration change: True once settled (connecting now, or the stream ended meanwhile)."""
        session = stream.session
        if stream.state != CONNECTING or session is None or stream.connector is not None:
            return True
        verdict = self._admit(session, opening)
        if isinstance(verdict, Refused):
            return False
        stream.connector = self.worker.loop.create_task(self._connect(stream, verdict))
        return True

    def _refuse_held(self, stream: Stream, opening: frames.Open, verdict: Refused) -> None:
        session = stream.session
        if stream.state == CONNECTING and session is not None and stream.connector is None:
            session.send_control(REFUSE, stream.sid, frames.encode_refuse(verdict.reason, verdict.detail))
            self._refused(session, opening, verdict.reason, verdict.detail)
            stream.drop(verdict.reason, local_rst=False)

    def _refused(self, session: Session, opening: frames.Open, reason: str, detail: str) -> None:
        self.worker.stats.refused("target", reason, opening.service_id)
        self.worker.throttled.warning(f"target:{reason}", "connection refused", side="target", reason=reason,
                                      detail=detail, src=netsock.fmt(opening.src), dst=netsock.fmt(opening.dst),
                                      service=opening.service_id, peer=session.peer_id)

    def lane_moved(self, session: Session, stream: Stream, lane_id: int) -> None:
        self.worker.lanes.move_requested(session, stream, lane_id)

    async def _connect(self, stream: Stream, verdict: Admitted) -> None:
        """Connect to the destination; the stream is the new socket's protocol (``local_connected`` follows).

        Transparent Mode needs IP_TRANSPARENT before bind, so it builds its socket; otherwise uvloop connects
        natively (the cheapest path, measured), from ``bind_address`` when the service has one.
        """
        cfg = self.worker.snapshot.cfg
        bind_ip = stream.src[0] if verdict.transparent else verdict.service.bind_address
        loop = self.worker.loop
        sock: socket.socket | None = None
        timer = loop.call_later(cfg.connect_timeout, self._connect_timed_out, stream)
        try:
            if verdict.transparent:
                sock = netsock.upstream_socket(stream.dst[0], bind_ip=bind_ip, transparent=True)
                await netsock.connect(sock, stream.dst, cfg.connect_timeout)
                await loop.create_connection(lambda: stream, sock=sock)
            else:
                await loop.create_connection(lambda: stream, stream.dst[0], stream.dst[1],
                                             local_addr=(bind_ip, 0) if bind_ip else None)
        except (OSError, TimeoutError, asyncio.CancelledError) as err:
            if sock is not None and stream.transport is None:
                with contextlib.suppress(OSError):
                    sock.close()
            timed_out = stream.refused_reason == "timeout"
            if isinstance(err, asyncio.CancelledError) and not timed_out:
                raise  # the stream was reset meanwhile
            self._connect_failed(stream, "timed out" if timed_out else str(err) or type(err).__name__)
        finally:
            timer.cancel()

    def _connect_timed_out(self, stream: Stream) -> None:
        if stream.state == CONNECTING and stream.connector is not None:
            stream.refused_reason = "timeout"
            stream.connector.cancel()

    def _connect_failed(self, stream: Stream, why: str) -> None:
        stream.connector = None
        session = stream.session
        if stream.state == CONNECTING and session is not None:
            detail = f"{netsock.fmt(stream.dst)}: {why}"
            session.send_control(REFUSE, stream.sid, frames.encode_refuse("connect_failed", detail))
            self._refused(session, frames.Open(stream.service_id or "?", stream.src, stream.dst), "connect_failed",
                          detail)
            stream.drop("connect failed", local_rst=False)

    # --- StreamHooks ------------------------------------------------------------------------------------------------

    def local_connected(self, stream: Stream) -> None:
        stream.connector = None
        self.worker.stats.relaying("target", stream.service_id or "?", stream)
        stream.upstream_ready()

    def stream_refused(self, stream: Stream, reason: str, detail: str) -> None:
        """Not used on this side (only a source receives REFUSE)."""

    def promote(self, stream: Stream) -> None:
        """Not used on this side (the source decides when a stream moves to a lane)."""

    def stream_finished(self, stream: Stream, reset: str | None) -> None:
        worker = self.worker
        worker.stats.closed("target", to_tunnel=stream.up, from_tunnel=stream.down, service_id=stream.service_id,
                            relayed=stream.transport is not None, stream=stream)
        if worker.log_streams:
            worker.log.debug("stream ended", side="target", stream=stream.sid, service=stream.service_id,
                             src=netsock.fmt(stream.src), dst=netsock.fmt(stream.dst), to_tunnel=stream.up,
                             from_tunnel=stream.down, reset=reset)

    def go_away(self, reason: str) -> None:
        for session in list(self.sessions):
            session.go_away(reason)

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions):
            session.close(reason)
