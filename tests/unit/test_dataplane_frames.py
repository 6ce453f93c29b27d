"""The session wire format (``arctic.dataplane.frames``): OPEN payloads round-trip, bad ones are refused."""

from __future__ import annotations

import struct

import pytest
from arctic.dataplane import frames
from hypothesis import given, settings
from hypothesis import strategies as st

SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"


def test_an_open_round_trips_every_field():
    opening = frames.Open(SVC, ("10.0.0.2", 40000), ("192.168.100.2", 443), True)
    assert frames.decode_open(frames.encode_open(opening)) == opening


def test_ipv6_opens_round_trip():
    opening = frames.Open(SVC, ("fd00:10::2", 1), ("fd00:100::2", 65535))
    assert frames.decode_open(memoryview(frames.encode_open(opening))) == opening


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.ip_addresses(v=4), st.integers(0, 65535), st.integers(0, 65535), st.booleans())
def test_any_ipv4_open_round_trips(src, dst, sport, dport, transparent):
    opening = frames.Open(SVC, (str(src), sport), (str(dst), dport), transparent)
    assert frames.decode_open(frames.encode_open(opening)) == opening


def test_mixed_address_families_cannot_be_encoded():
    with pytest.raises(ValueError):
        frames.encode_open(frames.Open(SVC, ("10.0.0.2", 1), ("fd00::1", 2)))


@pytest.mark.parametrize("mutate", [
    lambda b: b[:5],  # truncated
    lambda b: bytes([0x80]) + b[1:],  # unknown flag
    lambda b: b[:1] + bytes([5]) + b[2:],  # address family 5
    lambda b: b + b"x",  # trailing byte
    lambda b: b[:-len(SVC) - 1] + bytes([0]),  # empty service id
], ids=["truncated", "flag", "family", "trailing", "empty-service"])
def test_malformed_opens_are_refused(mutate):
    good = frames.encode_open(frames.Open(SVC, ("10.0.0.2", 1), ("10.0.0.3", 2)))
    with pytest.raises(frames.FrameError):
        frames.decode_open(mutate(good))


def test_refuse_reasons_travel_as_codes_and_unknown_codes_read_as_refused():
    assert frames.decode_refuse(frames.encode_refuse("destination_not_routed", "why")) == \
        ("destination_not_routed", "why")
    assert frames.decode_refuse(bytes([250]) + b"?") == ("refused", "?")
    with pytest.raises(frames.FrameError):
        frames.decode_refuse(b"")


def test_the_header_packs_type_length_and_stream():
    raw = frames.frame(frames.WINDOW, 7, frames.encode_u32(65536))
    word, sid = struct.unpack("!II", raw[:8])
    assert (word >> 24, word & 0xFFFFFF, sid) == (frames.WINDOW, 4, 7)
    assert frames.decode_u32(raw[8:]) == 65536
