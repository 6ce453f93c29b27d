"""The target's admission checks: each refusal reason, in the documented order, and what is admitted."""

from __future__ import annotations

import base64

import pytest
from arctic.dataplane import header as hdr
from arctic.dataplane.admission import Admitted, Refused, admit
from arctic.dataplane.config import parse_config
from arctic.dataplane.keys import raw_public_key
from arctic.dataplane.replay import ReplayCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KA, KB, KC = (Ed25519PrivateKey.generate() for _ in range(3))
A = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA"  # source
B = "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB"  # target (us)
C = "peer_01HZY3K8J5Q2W9V4XN7R6T0CCC"  # another configured peer
SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"
SVC_TRANSPARENT = "svc_01HZY3K8J5Q2W9V4XN7R6T0S02"
SVC_ELSEWHERE = "svc_01HZY3K8J5Q2W9V4XN7R6T0S03"  # A -> C: we are not its target
NOW = 1_800_000_000_000


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
    ],
})


def header(key=KA, signer=A, service=SVC, src="10.0.0.2", dst="192.168.100.2", ts=NOW, transparent=False,
           nonce=None) -> hdr.StreamHeader:
    return hdr.decode_header(hdr.encode_header(key, service_id=service, signer_peer_id=signer, src=(src, 40000),
                                               dst=(dst, 80), transparent=transparent, timestamp_ms=ts, nonce=nonce))


def check(h: hdr.StreamHeader, tls_peer: str | None = None, cache: ReplayCache | None = None):
    return admit(h, CFG, ReplayCache() if cache is None else cache, now_ms=NOW, tls_peer_id=tls_peer)


def test_a_good_header_is_admitted():
    verdict = check(header(), tls_peer=A)
    assert isinstance(verdict, Admitted) and verdict.service.id == SVC and not verdict.transparent


@pytest.mark.parametrize(("h", "tls_peer", "reason"), [
    (header(signer="peer_01HZY3K8J5Q2W9V4XN7R6T0ZZZ"), None, "unknown_signer"),
    (header(key=KC, signer=A), None, "bad_signature"),  # C signs, claims to be A
    (header(ts=NOW - 61_000), None, "stale_timestamp"),
    (header(ts=NOW + 61_000), None, "stale_timestamp"),
    (header(service="svc_01HZY3K8J5Q2W9V4XN7R6T0S99"), None, "unknown_service"),
    (header(key=KC, signer=C), None, "wrong_source_peer"),  # C correctly signs, but SVC's source is A
    (header(), C, "wrong_source_peer"),  # A's header carried over C's TLS tunnel
    (header(service=SVC_ELSEWHERE), None, "not_target"),
    (header(dst="192.168.200.2"), None, "destination_not_routed"),
    (header(src="172.16.0.1"), None, "destination_not_routed"),  # source outside the route's source_cidr
])
def test_refusal_reasons(h, tls_peer, reason):
    verdict = check(h, tls_peer)
    assert isinstance(verdict, Refused) and verdict.reason == reason, verdict


def test_a_replayed_header_is_refused():
    cache = ReplayCache()
    h = header()
    assert isinstance(check(h, cache=cache), Admitted)
    verdict = check(h, cache=cache)
    assert isinstance(verdict, Refused) and verdict.reason == "replayed_nonce"


def test_the_signature_is_checked_before_the_nonce_is_remembered():
    cache = ReplayCache()
    nonce = b"N" * 16
    assert check(header(key=KC, nonce=nonce), cache=cache).reason == "bad_signature"
    assert isinstance(check(header(nonce=nonce), cache=cache), Admitted), "a forgery must not burn a nonce"


def test_transparent_needs_both_the_header_flag_and_the_service():
    to_200 = {"dst": "192.168.200.2", "service": SVC_TRANSPARENT}
    assert check(header(transparent=True, **to_200)).transparent
    assert not check(header(transparent=False, **to_200)).transparent
    assert not check(header(transparent=True)).transparent  # SVC is not fully transparent
