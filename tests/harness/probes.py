"""Reachability probes run from inside a lab host (``host.call``), with no dependency on ping/nc binaries."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time

from .lab import Host
from .safety import lab_address

_ECHO = {4: (8, 0, 3), 6: (128, 129, 1)}  # ICMP types: (echo request, echo reply, destination unreachable)


def _quoted_ident(quoted: bytes, version: int) -> bytes:
    """The echo identifier inside the original packet that an ICMP error quotes."""
    offset = (quoted[0] & 0x0F) * 4 if version == 4 and quoted else 40
    return quoted[offset + 4:offset + 6]


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _echo(address: str, timeout: float) -> bool:
    addr = ipaddress.ip_address(address)
    request, reply, unreachable = _ECHO[addr.version]
    family, proto = ((socket.AF_INET, socket.IPPROTO_ICMP) if addr.version == 4
                     else (socket.AF_INET6, socket.IPPROTO_ICMPV6))
    ident = (os.getpid() ^ id(object())) & 0xFFFF
    header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
    payload = b"arctic-lab"
    if addr.version == 4:  # the kernel fills in the ICMPv6 checksum itself
        header = struct.pack("!BBHHH", request, 0, _checksum(header + payload), ident, 1)
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        try:
            sock.sendto(header + payload, (address, 0))
        except OSError:  # e.g. ENETUNREACH: no route at all
            return False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, src = sock.recvfrom(2048)
            except TimeoutError:
                return False
            if addr.version == 4:
                data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets include the IP header
            if len(data) < 8:
                continue
            if data[0] == reply and ipaddress.ip_address(src[0]) == addr and data[4:6] == header[4:6]:
                return True
            if data[0] == unreachable and _quoted_ident(data[8:], addr.version) == header[4:6]:
                return False  # a router said there is no way there: no point waiting for the timeout
    return False


def ping(host: Host, address: str, *, timeout: float = 1.0) -> bool:
    """One ICMP echo from ``host`` to a lab ``address``; True if the reply came back within ``timeout``."""
    lab_address(address)
    return host.call(_echo, address, timeout, timeout=timeout + 5)


def _connect(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def tcp_connect(host: Host, address: str, port: int, *, timeout: float = 2.0) -> bool:
    """True if a TCP connection from ``host`` to ``address:port`` (a lab address) is accepted."""
    lab_address(address)
    return host.call(_connect, address, port, timeout, timeout=timeout + 5)
