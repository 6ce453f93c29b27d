"""Address-conflict probing without a LAN: which ARP frames mean "in use", and how a kernel DAD run is read.

The real probes on a real LAN segment are in ``tests/lab/test_netconf_interfaces.py``.
"""

from __future__ import annotations

import socket
import struct

import pytest
from arctic.netconf.probe import (
    IFA_F_DADFAILED,
    IFA_F_TENTATIVE,
    ArpProbe,
    ProbeError,
    conflicting_sender,
    probe_frame,
    wait_for_dad,
)

OWN = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("0a0b0c0d0e0f")
TARGET = socket.inet_aton("192.168.100.10")
ZERO = b"\0" * 4


def arp(op: int, sha: bytes, spa: bytes, tpa: bytes, *, ptype: int = 0x0800) -> bytes:
    header = b"\xff" * 6 + sha + struct.pack("!H", 0x0806)
    return header + struct.pack("!HHBBH6s4s6s4s", 1, ptype, 6, 4, op, sha, spa, b"\0" * 6, tpa)


def test_the_probe_is_a_broadcast_arp_request_from_0_0_0_0_for_the_address_padded_to_a_minimum_frame():
    frame = probe_frame(OWN, TARGET)
    assert len(frame) == 60 and frame[:6] == b"\xff" * 6 and frame[6:12] == OWN
    assert frame[12:14] == b"\x08\x06"
    _, ptype, _, _, op, sha, spa, tha, tpa = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
    assert (ptype, op, sha, spa, tha, tpa) == (0x0800, 1, OWN, ZERO, b"\0" * 6, TARGET)


@pytest.mark.parametrize("frame, holder", [
    (arp(2, OTHER, TARGET, ZERO), "0a:0b:0c:0d:0e:0f"),  # the holder answers our probe
    (arp(1, OTHER, TARGET, socket.inet_aton("192.168.100.1")), "0a:0b:0c:0d:0e:0f"),  # the holder asks for someone
    (arp(1, OTHER, ZERO, TARGET), "0a:0b:0c:0d:0e:0f"),  # another host probes for it at the same time
], ids=["reply", "request-from-holder", "simultaneous-probe"])
def test_any_arp_from_a_host_using_or_probing_for_the_address_is_a_conflict(frame, holder):
    assert conflicting_sender(frame, OWN, TARGET) == holder


@pytest.mark.parametrize("frame", [
    probe_frame(OWN, TARGET),  # our own probe, seen by the socket
    arp(2, OTHER, socket.inet_aton("192.168.100.11"), ZERO),  # about another address
    arp(1, OTHER, ZERO, socket.inet_aton("192.168.100.11")),  # a probe for another address
    arp(2, OTHER, TARGET, ZERO, ptype=0x86DD),  # not IPv4 over Ethernet
    arp(2, OTHER, TARGET, ZERO)[:30],  # truncated
], ids=["own", "other-address", "other-probe", "not-ipv4", "truncated"])
def test_frames_that_say_nothing_about_the_address_are_no_conflict(frame):
    assert conflicting_sender(frame, OWN, TARGET) is None


def test_a_probe_that_cannot_open_its_socket_says_so_instead_of_reporting_free():
    with pytest.raises(ProbeError, match="cannot open an ARP socket on arcnosuch0"):
        ArpProbe().holder("arcnosuch0", "02:00:00:00:00:01", "192.168.100.10")


@pytest.mark.parametrize("flags, outcome", [
    (0x80, "ok"),  # permanent, tentative cleared
    (0x80 | IFA_F_TENTATIVE | IFA_F_DADFAILED, "duplicate"),
    (None, "gone"),
], ids=["ok", "duplicate", "gone"])
def test_a_finished_dad_run_is_read_from_the_address_flags(flags, outcome):
    assert wait_for_dad(lambda: flags) == outcome


def test_a_dad_run_still_tentative_at_the_deadline_is_pending():
    reads = []
    assert wait_for_dad(lambda: reads.append(1) or 0x80 | IFA_F_TENTATIVE, timeout=0) == "pending"
    assert reads == [1]
