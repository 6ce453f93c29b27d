"""The target peer's decision: may this stream be re-opened towards its destination?

Pure logic (no sockets), so every refusal reason is unit-tested. Who asks is already settled by the session: its
peer proved its identity key in the handshake, and the session's keys (TLS, or the control-frame MAC) bind every
OPEN to it, so there is no per-stream signature, nonce or timestamp left to check. Checks run in a fixed order and
the first failure wins; each has a stable ``reason`` used in the WARN log line, the stats and the REFUSE frame:

1. ``unknown_service`` - the service exists here;
2. ``wrong_source_peer`` - the session's peer is the service's source;
3. ``not_target`` - this peer is the service's target;
4. ``session_service_mismatch`` - the stream travels on a session opened for its own service (the session's
   QoS slot shapes it, so a stream must not borrow another service's);
5. ``transport_mismatch`` - the session's transport is the service's transport;
6. ``destination_not_routed`` - source and destination fall under one of the service's routes, so a target is
   never an open proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import DataplaneConfig, ServiceConfig
from .frames import Open


@dataclass(frozen=True)
class Admitted:
    service: ServiceConfig
    transparent: bool  # the stream asks for it AND the service allows it


@dataclass(frozen=True)
class Refused:
    reason: str
    detail: str


def admit(opening: Open, cfg: DataplaneConfig, *, session_peer_id: str, session_service_id: str,
          session_transport: str) -> Admitted | Refused:
    service = cfg.services_by_id.get(opening.service_id)
    if service is None:
        return Refused("unknown_service", f"service {opening.service_id} is not configured here")
    if service.source_peer_id != session_peer_id:
        return Refused("wrong_source_peer",
                       f"{session_peer_id} is not the source of {service.id} ({service.source_peer_id} is)")
    if service.target_peer_id != cfg.local_peer_id:
        return Refused("not_target", f"this peer is not the target of {service.id}")
    if session_service_id != service.id:
        return Refused("session_service_mismatch",
                       f"a stream of {service.id} arrived on the session of {session_service_id}")
    if service.transport_type != session_transport:
        return Refused("transport_mismatch",
                       f"{service.id} uses transport {service.transport_type}, the session is {session_transport}")
    if not service.admits(opening.src[0], opening.dst[0]):
        return Refused("destination_not_routed",
                       f"{opening.src[0]} -> {opening.dst[0]} is not covered by the routes of {service.id}")
    return Admitted(service, transparent=opening.transparent and service.fully_transparent)
