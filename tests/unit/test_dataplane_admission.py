"""The target's admission rules for a stream (``arctic.dataplane.admission``): every refusal reason, in order."""

from __future__ import annotations

import base64

import pytest
from arctic.dataplane.admission import Admitted, Refused, admit
from arctic.dataplane.config import parse_config
from arctic.dataplane.frames import Open
from arctic.dataplane.keys import raw_public_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KA, KB, KC = (Ed25519PrivateKey.generate() for _ in range(3))
A = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA"  # source
B = "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB"  # target (us)
C = "peer_01HZY3K8J5Q2W9V4XN7R6T0CCC"  # another configured peer
SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"
SVC_TRANSPARENT = "svc_01HZY3K8J5Q2W9V4XN7R6T0S02"
SVC_ELSEWHERE = "svc_01HZY3K8J5Q2W9V4XN7R6T0S03"  # A -> C: we are not its target
SVC_KCP = "svc_01HZY3K8J5Q2W9V4XN7R6T0S04"


def b64(key) -> str:
    return base64.b64encode(raw_public_key(key)).decode()


CFG = parse_config({
    "local_peer_id": B, "identity_key_file": "/nonexistent",
    "peers": {p: {"public_key": b64(k), "tunnel_address": ip}
              for p, k, ip in ((A, KA, "198.18.0.1"), (B, KB, "198.18.0.2"), (C, KC, "198.18.0.3"))},
    "services": [
        {"id": SVC, "source_peer_id": A, "target_peer_id": B,
         "routes": [{"id": 1, "source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "seq": 1}]},
        {"id": SVC_TRANSPARENT, "source_peer_id": A, "target_peer_id": B, "fully_transparent": True,
         "routes": [{"id": 1, "dest_cidr": "192.168.200.0/24", "seq": 2}]},
        {"id": SVC_ELSEWHERE, "source_peer_id": A, "target_peer_id": C,
         "routes": [{"id": 1, "dest_cidr": "0.0.0.0/0", "seq": 3}]},
        {"id": SVC_KCP, "source_peer_id": A, "target_peer_id": B, "transport_type": "kcp",
         "routes": [{"id": 1, "dest_cidr": "192.168.50.0/24", "seq": 4}]},
    ],
})


def check(service=SVC, src="10.0.0.2", dst="192.168.100.2", *, transparent=False, peer=A, session_service=None,
          transport="tcp"):
    opening = Open(service, (src, 40000), (dst, 80), transparent)
    return admit(opening, CFG, session_peer_id=peer, session_service_id=session_service or service,
                 session_transport=transport)


def test_a_stream_of_the_sessions_peer_within_the_service_routes_is_admitted():
    verdict = check()
    assert isinstance(verdict, Admitted) and verdict.service.id == SVC and not verdict.transparent


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"service": "svc_01HZY3K8J5Q2W9V4XN7R6T0ZZZ"}, "unknown_service"),
    ({"peer": C}, "wrong_source_peer"),
    ({"service": SVC_ELSEWHERE}, "not_target"),
    ({"session_service": SVC_TRANSPARENT}, "session_service_mismatch"),
    ({"service": SVC_KCP, "dst": "192.168.50.9"}, "transport_mismatch"),
    ({"dst": "192.168.101.2"}, "destination_not_routed"),
    ({"src": "172.16.0.1"}, "destination_not_routed"),  # the route names a source too
])
def test_each_refusal_reason(kwargs, reason):
    verdict = check(**kwargs)
    assert isinstance(verdict, Refused) and verdict.reason == reason, verdict


def test_the_first_failing_check_wins():
    assert check(peer=C, dst="192.168.101.2").reason == "wrong_source_peer"


def test_transparent_needs_both_the_stream_flag_and_the_service():
    assert check(service=SVC_TRANSPARENT, dst="192.168.200.7", transparent=True).transparent
    assert not check(service=SVC_TRANSPARENT, dst="192.168.200.7").transparent
    assert not check(transparent=True).transparent  # the service does not allow it
