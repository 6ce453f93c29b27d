"""Stream header: encode, decode, sign, verify - and any tampering is detected."""

from __future__ import annotations

import pytest
from arctic.dataplane import header as hdr
from arctic.dataplane.replay import ReplayCache
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

KEY = Ed25519PrivateKey.generate()
SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0ABC"
PEER = "peer_01HZY3K8J5Q2W9V4XN7R6T0ABD"


def make(**kw) -> bytes:
    args = {"service_id": SVC, "signer_peer_id": PEER, "src": ("10.0.0.2", 40000),
            "dst": ("192.168.100.2", 8080), "transparent": False}
    args.update(kw)
    return hdr.encode_header(KEY, **args)


def test_round_trip_keeps_every_field_and_verifies():
    raw = make(transparent=True, timestamp_ms=1_700_000_000_123, nonce=b"n" * 16)
    h = hdr.decode_header(raw)
    assert (h.service_id, h.signer_peer_id) == (SVC, PEER)
    assert (h.src_ip, h.src_port, h.dst_ip, h.dst_port) == ("10.0.0.2", 40000, "192.168.100.2", 8080)
    assert h.transparent and h.timestamp_ms == 1_700_000_000_123 and h.nonce == b"n" * 16
    assert h.verify(KEY.public_key())
    assert hdr.header_length(raw[: hdr.PREFIX.size]) == len(raw)


def test_ipv6_addresses_round_trip():
    h = hdr.decode_header(make(src=("fd00:10::2", 1), dst=("fd00:100::2", 65535)))
    assert (h.src_ip, h.dst_ip, h.dst_port) == ("fd00:10::2", "fd00:100::2", 65535)


def test_each_header_gets_a_fresh_nonce_and_current_timestamp():
    a, b = hdr.decode_header(make()), hdr.decode_header(make())
    assert a.nonce != b.nonce
    assert abs(a.timestamp_ms - b.timestamp_ms) < 5_000


def test_flipping_any_single_bit_is_detected():
    raw = make()
    for pos in range(len(raw)):
        tampered = bytearray(raw)
        tampered[pos] ^= 0x04
        try:
            h = hdr.decode_header(bytes(tampered))
        except hdr.HeaderError:
            continue  # refused as malformed: also fine
        assert not h.verify(KEY.public_key()), f"tampering at byte {pos} went unnoticed"


def test_signature_by_another_key_does_not_verify():
    other = Ed25519PrivateKey.generate()
    h = hdr.decode_header(hdr.encode_header(other, service_id=SVC, signer_peer_id=PEER, src=("10.0.0.2", 1),
                                            dst=("10.0.0.3", 2), transparent=False))
    assert not h.verify(KEY.public_key())


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b"XXXX" + b[4:], "malformed_header"),
    (lambda b: b[:4] + bytes([2]) + b[5:], "unsupported_version"),
    (lambda b: b[:5] + bytes([0x80]) + b[6:], "malformed_header"),  # unknown flag
    (lambda b: b[:-1], "malformed_header"),  # shorter than its length field says
])
def test_malformed_headers_are_refused_with_a_reason(mutate, reason):
    with pytest.raises(hdr.HeaderError) as err:
        hdr.decode_header(mutate(make()))
    assert err.value.reason == reason


def test_announced_length_is_bounded():
    prefix = hdr.PREFIX.pack(hdr.MAGIC, hdr.VERSION, 0, hdr.MAX_HEADER + 1)
    with pytest.raises(hdr.HeaderError):
        hdr.header_length(prefix)


def test_mixed_address_families_cannot_be_encoded():
    with pytest.raises(ValueError):
        make(src=("10.0.0.2", 1), dst=("fd00::1", 2))


@settings(max_examples=60, deadline=None)
@given(src=st.ip_addresses(v=4), dst=st.ip_addresses(v=4), sport=st.integers(0, 65535),
       dport=st.integers(0, 65535), transparent=st.booleans())
def test_any_ipv4_connection_round_trips(src, dst, sport, dport, transparent):
    h = hdr.decode_header(make(src=(str(src), sport), dst=(str(dst), dport), transparent=transparent))
    assert (h.src_ip, h.src_port, h.dst_ip, h.dst_port, h.transparent) == (str(src), sport, str(dst), dport,
                                                                          transparent)


# --- replay cache ---------------------------------------------------------------------------------------------------

def test_a_nonce_is_accepted_once():
    cache = ReplayCache()
    assert cache.check_and_add(b"a" * 16, 1_000, now_ms=1_000)
    assert not cache.check_and_add(b"a" * 16, 1_000, now_ms=1_500)
    assert cache.check_and_add(b"b" * 16, 1_000, now_ms=1_500)


def test_nonces_are_forgotten_once_their_timestamp_left_the_window():
    cache = ReplayCache(window_ms=60_000)
    cache.check_and_add(b"a" * 16, 0, now_ms=0)
    cache.check_and_add(b"b" * 16, 30_000, now_ms=30_000)
    cache.check_and_add(b"c" * 16, 61_000, now_ms=61_000)  # "a" is older than the window now
    assert len(cache) == 2


def test_a_full_cache_stays_bounded_and_never_accepts_a_nonce_twice():
    cache = ReplayCache(window_ms=60_000, max_entries=3)
    for i in range(3):
        assert cache.check_and_add(bytes([i]) * 16, 1_000 + i, now_ms=2_000)
    assert cache.check_and_add(b"x" * 16, 1_010, now_ms=2_000)  # evicts the oldest (ts 1000)
    assert len(cache) == 3
    assert not cache.check_and_add(bytes([0]) * 16, 1_000, now_ms=2_000), "evicted nonce must not come back"
    assert not cache.check_and_add(b"y" * 16, 999, now_ms=2_000), "older than what we forgot: not provably new"
