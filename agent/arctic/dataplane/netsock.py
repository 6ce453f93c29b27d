"""Socket recipes of the data plane: TPROXY listeners, tunnel and upstream sockets (optionally spoofing).

Kept apart from the event-loop code so each kernel detail (option numbers, ordering of setsockopt vs bind) is
written once, next to the reason for it. Every listener sets SO_REUSEPORT: each worker process opens its own,
and the kernel spreads new connections (TPROXY-diverted ones included) over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = getattr(socket, "IPV6_TRANSPARENT", 75)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SO_PRIORITY = getattr(socket, "SO_PRIORITY", 12)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def was_reset(sock: socket.socket) -> bool:
    """True once the other end reset the connection (or it timed out): the socket holds an error.

    Linux keeps what it had received readable after a RST, and a reader paused by flow control hears of the reset
    only when it has read all of it: up to the receive buffer (megabytes), relayed for nothing. At a bandwidth
    limit of 10 Mbit/s that is seconds during which the service's next flow waits. (Reading SO_ERROR clears it:
    only for a caller that then ends the connection.)
    """
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
    except OSError:
        return False  # closed already: the transport reports that itself


def reset_close(sock: socket.socket | None) -> None:
    """Close with RST, so the other end fails at once instead of seeing a clean end of stream."""
    if sock is None:
        return
    linger_zero(sock)
    with contextlib.suppress(OSError):
        sock.close()


def upstream_socket(dst_ip: str, *, bind_ip: str | None = None, transparent: bool = False) -> socket.socket:
    """A non-blocking socket ready to connect to ``dst_ip``; ``transparent`` binds ``bind_ip`` (the client's
    address) via IP_TRANSPARENT, otherwise ``bind_ip`` is a local address to leave from (service interface)."""
    sock = socket.socket(family_of(dst_ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if transparent:
            _set_transparent(sock)
        if bind_ip is not None:
            with contextlib.suppress(OSError):  # port chosen at connect(): no ephemeral port exhaustion
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((bind_ip, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def tunnel_socket(peer_ip: str, *, priority: int = 0, congestion: str | None = None) -> socket.socket:
    """A non-blocking socket for a session or lane towards a peer: shaped by ``priority``, kept alive, no Nagle.

    ``congestion`` picks the congestion control of this socket only (``TCP_CONGESTION``), whatever the host's
    default; a kernel without it keeps the default (the caller is told by ``OSError``).
    """
    sock = socket.socket(family_of(peer_ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        set_priority(sock, priority)
        tune_stream(sock)
        if congestion:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, congestion.encode())
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


def fmt(addr: object) -> str:
    """``198.18.0.2:61000`` / ``[fd00::2]:61000`` for logs."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr)


async def connect(sock: socket.socket, address: tuple, timeout: float) -> None:
    """Connect a non-blocking socket, bounded by ``timeout`` (raises OSError or TimeoutError).

    Why not ``loop.sock_connect``: uvloop resolves the address on its thread pool first, even a numeric one,
    which costs more than the connection itself (measured: ~70 us of CPU per connect); and ``asyncio.wait_for``
    adds a task per call. Here: ``connect_ex``, one writer callback, one timer.
    """
    code = sock.connect_ex(address)
    if code == 0:
        return
    if code not in (errno.EINPROGRESS, errno.EAGAIN):
        raise OSError(code, f"connect to {fmt(address)}: {errno.errorcode.get(code, code)}")
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _set_if_pending, done, None)
    timer = loop.call_later(timeout, _set_if_pending, done, TimeoutError(f"connect to {fmt(address)} timed out"))
    try:
        failure = await done
    finally:
        loop.remove_writer(fd)
        timer.cancel()
    if failure is not None:
        raise failure
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, f"connect to {fmt(address)}: {os.strerror(code)}")


def _set_if_pending(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)
