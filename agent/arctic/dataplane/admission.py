"""The target peer's decision: may this tunnel stream be re-opened towards its destination?

Pure logic (no sockets), so every refusal reason is unit-tested. Checks run in a fixed order and the first
failure wins; each has a stable ``reason`` used in the WARN log line and the stats file:

1. ``unknown_signer`` / ``bad_signature`` - the header is signed by a configured peer's identity key;
2. ``stale_timestamp`` - it was made within +-60 s of our clock;
3. ``replayed_nonce`` - its nonce was not seen before (bounded replay cache);
4. ``unknown_service`` - the service exists here;
5. ``wrong_source_peer`` - the signer (and, over TLS, the authenticated tunnel peer) is the service's source;
6. ``not_target`` - this peer is the service's target;
7. ``destination_not_routed`` - source and destination fall under one of the service's routes, so a target is
   never an open proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .config import DataplaneConfig, ServiceConfig
from .header import StreamHeader
from .replay import ReplayCache

TIMESTAMP_WINDOW_MS = 60_000


@dataclass(frozen=True)
class Admitted:
    header: StreamHeader
    service: ServiceConfig
    transparent: bool  # the header asks for it AND the service allows it


@dataclass(frozen=True)
class Refused:
    reason: str
    detail: str


def admit(header: StreamHeader, cfg: DataplaneConfig, replay: ReplayCache, *, now_ms: int,
          tls_peer_id: str | None = None) -> Admitted | Refused:
    """Run the checks in order; ``tls_peer_id`` is the peer TLS authenticated (None in ``encryption: none``)."""
    signer = cfg.peers.get(header.signer_peer_id)
    if signer is None:
        return Refused("unknown_signer", f"header signed by unknown peer {header.signer_peer_id}")
    if not header.verify(Ed25519PublicKey.from_public_bytes(signer.public_key)):
        return Refused("bad_signature", f"header signature does not verify with {signer.peer_id}'s key")
    skew = header.timestamp_ms - now_ms
    if abs(skew) > TIMESTAMP_WINDOW_MS:
        return Refused("stale_timestamp", f"header timestamp is {skew / 1000:+.1f} s from our clock (limit 60 s)")
    if not replay.check_and_add(header.nonce, header.timestamp_ms, now_ms):
        return Refused("replayed_nonce", "header nonce was already used")
    service = cfg.services_by_id.get(header.service_id)
    if service is None:
        return Refused("unknown_service", f"service {header.service_id} is not configured here")
    if service.source_peer_id != header.signer_peer_id:
        return Refused("wrong_source_peer",
                       f"{header.signer_peer_id} is not the source of {service.id} ({service.source_peer_id} is)")
    if tls_peer_id is not None and tls_peer_id != header.signer_peer_id:
        return Refused("wrong_source_peer",
                       f"header signed by {header.signer_peer_id} but the tunnel belongs to {tls_peer_id}")
    if service.target_peer_id != cfg.local_peer_id:
        return Refused("not_target", f"this peer is not the target of {service.id}")
    if not service.admits(header.src_ip, header.dst_ip):
        return Refused("destination_not_routed",
                       f"{header.src_ip} -> {header.dst_ip} is not covered by the routes of {service.id}")
    return Admitted(header, service, transparent=header.transparent and service.fully_transparent)
