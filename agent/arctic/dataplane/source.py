"""The source side: a client connection diverted by TPROXY becomes a stream in a session to the target peer.

``getsockname()`` of the accepted socket is the original destination. The winning route (``precedence`` order
across every service this peer is the source of) names the service; its session group (``sessions``) gives a
session, and the stream's OPEN goes out at once, with any bytes the client already sent right behind it
(the target holds them until its connection to the destination is up). Any failure resets the client at once,
so it never waits on a dead path: no session within ``connect_timeout``, or the target's REFUSE. A connection no
route matches waits up to ``transitions.SOURCE_WAIT`` for the reload that follows a kernel change, then is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import frames, netsock
from .config import ServiceConfig
from .session import Session
from .streams import OPENING, WAITING, Stream
from .transitions import SOURCE_WAIT

if TYPE_CHECKING:
    from .worker import Worker

SESSION_WAIT_GRACE = 0.5  # beyond connect_timeout: a dial in progress also has its handshake to finish


class Source:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def protocol(self) -> Stream:
        """Protocol factory of the TPROXY listeners."""
        return Stream(self)

    # --- StreamHooks ---------------------------------------------------------------------------------------------

    def local_connected(self, stream: Stream) -> None:
        """A client connection was intercepted: classify it and open its stream."""
        worker = self.worker
        cfg = worker.snapshot.cfg
        worker.stats.opened("source")
        transport = stream.transport
        assert transport is not None
        try:
            stream.dst = transport.get_extra_info("sockname")[:2]
            stream.src = transport.get_extra_info("peername")[:2]
        except (TypeError, OSError):
            self._refuse(stream, "tunnel_failed", "the client socket has no addresses")
            return
        if worker.draining:
            self._refuse(stream, "draining", "the data plane is stopping")
            return
        if stream.dst[1] == cfg.tproxy_port and netsock.is_local_address(stream.dst[0]):
            self._refuse(stream, "direct_connection", "connection addressed to the TPROXY port itself")
            return
        if not self._classify(stream):  # diverted ahead of this data plane's reload: wait for it (transitions)
            stream.state = WAITING
            worker.transitions.wait(lambda: self._classify_again(stream), lambda: self._no_route(stream),
                                    SOURCE_WAIT)

    def _classify_again(self, stream: Stream) -> bool:
        """After a configuration change: True once the stream is settled (classified, or gone meanwhile)."""
        return stream.state != WAITING or self._classify(stream)

    def _no_route(self, stream: Stream) -> None:
        if stream.state == WAITING:
            self._refuse(stream, "no_route", "no route of any service matches")

    def _classify(self, stream: Stream) -> bool:
        """The winning route names the service; a session of its group carries the stream. False: no route."""
        worker = self.worker
        match = worker.snapshot.cfg.route_for(stream.src[0], stream.dst[0])
        if match is None:
            return False
        _route, service = match
        stream.service_id = service.id
        group = worker.pool.group(service.id)
        if group is None:
            self._refuse(stream, "unknown_target_peer", f"target peer {service.target_peer_id} not configured")
            return True
        stream.state = WAITING
        session = group.pick(lambda s, reason: self._session_ready(stream, service, s, reason))
        if session is not None:
            self._open(stream, service, session)
        elif stream.state == WAITING:
            stream.connector = worker.loop.call_later(worker.snapshot.cfg.connect_timeout + SESSION_WAIT_GRACE,
                                                      self._gave_up, stream)  # type: ignore[assignment]
        return True

    def _session_ready(self, stream: Stream, service: ServiceConfig, session: Session | None, reason: str) -> None:
        if stream.state != WAITING:
            return  # the client left, or we gave up waiting
        if stream.connector is not None:
            stream.connector.cancel()
            stream.connector = None
        if session is None:
            self._refuse(stream, "tunnel_connect_failed", reason)
        else:
            self._open(stream, service, session)

    def _gave_up(self, stream: Stream) -> None:
        stream.connector = None
        if stream.state == WAITING:
            self._refuse(stream, "setup_timeout", "no session to the target peer came up in time")

    def _open(self, stream: Stream, service: ServiceConfig, session: Session) -> None:
        sid = session.open_stream(stream, frames.Open(service_id=service.id, src=stream.src, dst=stream.dst,
                                                      transparent=service.fully_transparent))
        stream.bind(session, sid, OPENING)
        stream.slot = session.slot
        cfg = self.worker.snapshot.cfg
        if cfg.bulk_lanes and session.mac is not None:  # plaintext TCP sessions only: lanes are spliced
            stream.lane_at = max(1, cfg.lane_threshold)
        self.worker.stats.relaying("source", service.id, stream)
        stream.pump(1 << 30)  # what the client sent meanwhile, and its FIN if it already half-closed

    def _refuse(self, stream: Stream, reason: str, detail: str) -> None:
        self.worker.stats.refused("source", reason, stream.service_id)
        self.worker.throttled.warning(f"source:{reason}", "connection refused", side="source", reason=reason,
                                      detail=detail, src=netsock.fmt(stream.src), dst=netsock.fmt(stream.dst),
                                      service=stream.service_id)
        stream.drop(reason, local_rst=True)

    def stream_refused(self, stream: Stream, reason: str, detail: str) -> None:
        """The target answered REFUSE (the stream then ends with a reset towards the client)."""
        key = "target_connect_failed" if reason == "connect_failed" else "target_refused"
        self.worker.stats.refused("source", key, stream.service_id)
        self.worker.throttled.warning(f"source:{key}", "connection refused by the target peer", side="source",
                                      reason=key, target_reason=reason, detail=detail, src=netsock.fmt(stream.src),
                                      dst=netsock.fmt(stream.dst), service=stream.service_id)

    def promote(self, stream: Stream) -> None:
        self.worker.lanes.promote(stream)

    def stream_finished(self, stream: Stream, reset: str | None) -> None:
        worker = self.worker
        relayed = stream.sid != 0
        worker.stats.closed("source", to_tunnel=stream.up, from_tunnel=stream.down, service_id=stream.service_id,
                            relayed=relayed, stream=stream)
        if stream.session is not None:
            worker.pool.stream_ended(stream.session)
        if worker.log_streams:
            worker.log.debug("stream ended", side="source", stream=stream.sid, service=stream.service_id,
                             src=netsock.fmt(stream.src), dst=netsock.fmt(stream.dst), to_tunnel=stream.up,
                             from_tunnel=stream.down, reset=reset)
