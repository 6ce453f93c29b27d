"""Socket recipes of the data plane: TPROXY listeners, upstream connects (optionally spoofing), resets.

Kept apart from the engine so each kernel detail (option numbers, ordering of setsockopt vs bind) is written
once, next to the reason for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SO_PRIORITY = getattr(socket, "SO_PRIORITY", 12)
LISTEN_BACKLOG = 1024
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 15, 4


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def _set_transparent(sock: socket.socket) -> None:
    """IP_TRANSPARENT: receive TPROXY-diverted flows, and bind() to addresses that are not ours (spoofing)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)


def tproxy_listener(family: socket.AddressFamily, port: int) -> socket.socket:
    """Listener for nft ``tproxy to :port``: wildcard address, IP_TRANSPARENT set before bind."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _set_transparent(sock)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_listener(address: str, port: int) -> socket.socket:
    family = family_of(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def tune_stream(sock: socket.socket) -> None:
    """No Nagle delay (we forward what we got at once) and keepalive, so idle dead peers are noticed."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def set_priority(sock: socket.socket, priority: int) -> None:
    """skb->priority for every packet of this socket; HTB picks the service class from it (no fw classifier)."""
    if priority:
        sock.setsockopt(socket.SOL_SOCKET, SO_PRIORITY, priority)


def linger_zero(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_close(sock: socket.socket | None) -> None:
    """Close with RST, so the other end fails at once instead of seeing a clean end of stream."""
    if sock is None:
        return
    linger_zero(sock)
    with contextlib.suppress(OSError):
        sock.close()


def connect_upstream(dst: tuple[str, int], timeout: float, *, bind_ip: str | None = None,
                     transparent: bool = False, priority: int = 0) -> socket.socket:
    """Connect to ``dst``; ``transparent`` binds ``bind_ip`` (the client's address) via IP_TRANSPARENT."""
    sock = socket.socket(family_of(dst[0]), socket.SOCK_STREAM)
    try:
        set_priority(sock, priority)
        if transparent:
            _set_transparent(sock)
        if bind_ip is not None:
            with contextlib.suppress(OSError):  # port chosen at connect(): no ephemeral port exhaustion
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((bind_ip, 0))
        sock.settimeout(timeout)
        sock.connect(dst)
        sock.settimeout(None)
        tune_stream(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def is_local_address(ip: str) -> bool:
    """Is ``ip`` one of this namespace's own addresses? (a plain bind succeeds only for local ones)"""
    with socket.socket(family_of(ip), socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError:
            return False
    return True
