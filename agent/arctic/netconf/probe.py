"""Is an address already used on the LAN? Asked only just before a service interface gets a static address.

IPv4: an ARP probe (RFC 5227 section 2.1.1) from the service's own MACVLAN, over a raw ``AF_PACKET`` socket: an ARP
request with sender address 0.0.0.0 (so no ARP cache on the LAN learns anything from it) asking for the address.
A host that uses the address answers (Linux replies to probes), and a host probing for it at the same moment
sends a probe of its own; either is a conflict. Silence until ``wait`` means free. Done in Python rather than with
``arping -D`` so the agent needs no extra package on every host (it already has ``CAP_NET_RAW`` / ``AF_PACKET``).
Timing is shorter than RFC 5227's (three probes 1-2 s apart, then 2 s): a host on the same segment answers within
milliseconds, and a reconcile run should not stall for seconds per address.

IPv6: the kernel's own duplicate address detection (RFC 4862). The address is added, stays ``tentative`` while the
kernel sends its Neighbour Solicitation, and ends either usable or ``dadfailed``; ``wait_for_dad`` waits for that
on the kernel's address notifications (bounded), not by sleeping.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
PACKET_OUTGOING = 4  # pkttype of our own frames, which a packet socket also sees
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ETH_HEADER = 14
_NO_ADDRESS = b"\0" * 4

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
DAD_TIMEOUT = 5.0  # a random delay of up to 1 s, then dad_transmits (1) x retrans_time (1 s), with room to spare


class ProbeError(OSError):
    """The probe itself could not run (no raw socket: the agent lacks CAP_NET_RAW, or the link vanished)."""


@dataclass(frozen=True)
class ArpProbe:
    probes: int = 3
    interval: float = 0.2  # seconds between probes
    wait: float = 1.0  # seconds from the first probe until silence counts as "free"

    def holder(self, ifname: str, mac: str, address: str) -> str | None:
        """MAC of a host that uses (or is probing for) ``address`` on ``ifname``'s LAN; None when nobody answered.

        A probe that cannot be sent (the link has no carrier) counts as silence: nobody is reachable to collide
        with, and the address is probed again whenever it has to be assigned again.
        """
        own, target = _mac_bytes(mac), socket.inet_aton(address)
        frame = probe_frame(own, target)
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            sock.bind((ifname, ETH_P_ARP))
        except OSError as exc:
            raise ProbeError(exc.errno, f"cannot open an ARP socket on {ifname}: {exc.strerror or exc}") from exc
        with sock:
            return self._listen(sock, frame, own, target)

    def _listen(self, sock: socket.socket, frame: bytes, own: bytes, target: bytes) -> str | None:
        deadline = time.monotonic() + self.wait
        sent, next_probe = 0, time.monotonic()
        while (now := time.monotonic()) < deadline:
            if sent < self.probes and now >= next_probe:
                sent += 1
                next_probe = now + self.interval
                try:
                    sock.send(frame)
                except OSError:
                    sent = self.probes  # cannot send (no carrier): stop probing, keep listening
            wake = min(deadline, next_probe) if sent < self.probes else deadline
            ready, _, _ = select.select([sock], [], [], max(0.0, wake - time.monotonic()))
            if not ready:
                continue
            data, addr = sock.recvfrom(2048)
            holder = None if addr[2] == PACKET_OUTGOING else conflicting_sender(data, own, target)
            if holder is not None:
                return holder
        return None


def probe_frame(own_mac: bytes, target: bytes) -> bytes:
    """Broadcast ARP probe: who has ``target``? (sender IP 0.0.0.0, target MAC zero), padded to 60 bytes."""
    header = b"\xff" * 6 + own_mac + struct.pack("!H", ETH_P_ARP)
    arp = _ARP.pack(1, ETH_P_IP, 6, 4, ARP_REQUEST, own_mac, _NO_ADDRESS, b"\0" * 6, target)
    return (header + arp).ljust(60, b"\0")


def conflicting_sender(frame: bytes, own_mac: bytes, target: bytes) -> str | None:
    """The sender MAC when ``frame`` shows another host using ``target`` (any ARP from it) or probing for it."""
    if len(frame) < _ETH_HEADER + _ARP.size:
        return None
    _, ptype, hlen, plen, op, sha, spa, _, tpa = _ARP.unpack_from(frame, _ETH_HEADER)
    if (ptype, hlen, plen) != (ETH_P_IP, 6, 4) or sha == own_mac:
        return None
    if spa == target or (op == ARP_REQUEST and spa == _NO_ADDRESS and tpa == target):
        return ":".join(f"{b:02x}" for b in sha)
    return None


def wait_for_dad(read_flags: Callable[[], int | None], timeout: float = DAD_TIMEOUT) -> str:
    """How the kernel's duplicate address detection of one IPv6 address ended.

    ``read_flags`` returns the address's current flags (None once it is gone). Returns ``ok`` (tentative cleared),
    ``duplicate`` (dadfailed: another host holds it), ``gone``, or ``pending`` when DAD has not ended within
    ``timeout`` (no carrier: the kernel finishes it later and a failure then shows as ``dadfailed``).
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as events:
        events.bind((0, RTMGRP_IPV6_IFADDR))  # subscribed before the first read: no change can slip between
        deadline = time.monotonic() + timeout
        while True:
            flags = read_flags()
            if flags is None:
                return "gone"
            if flags & IFA_F_DADFAILED:
                return "duplicate"
            if not flags & IFA_F_TENTATIVE:
                return "ok"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "pending"
            if select.select([events], [], [], min(remaining, 0.5))[0]:  # re-read at least twice a second
                _drain(events)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        pass


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))
