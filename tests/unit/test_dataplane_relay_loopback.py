"""Relay and tunnel channels over loopback (no namespaces): bytes, half-close, resets, TLS identity binding.

Loopback in the root namespace only (127.0.0.1): these are the socket semantics, the lab tests add the kernel
interception and the real two-agent path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from arctic.dataplane import tls
from arctic.dataplane.channels import PlainChannel, TlsChannel
from arctic.dataplane.keys import raw_public_key
from arctic.dataplane.relay import Relay
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KA, KB, KC = (Ed25519PrivateKey.generate() for _ in range(3))
PA, PB = raw_public_key(KA), raw_public_key(KB)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
    return a, b


def tls_pair(client_key=KA, server_trusts=(PA,), client_expects=PB):
    """A TLS channel pair over loopback, handshakes running: (client, server, client future, server future)."""
    a, b = tcp_pair()
    for s in (a, b):
        s.settimeout(5)
    client = TlsChannel(a, tls.client_context(client_key, client_expects), server_side=False)
    server = TlsChannel(b, tls.server_context(KB, server_trusts), server_side=True)
    pool = ThreadPoolExecutor(2)
    fut_s = pool.submit(server.handshake)
    fut_c = pool.submit(client.handshake)
    pool.shutdown(wait=False)  # the caller decides which outcome to wait for
    return client, server, fut_c, fut_s


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


@pytest.fixture(params=["plain", "tls"])
def path(request):
    """``client`` <-> relay(s) <-> ``far``: plain = one splice relay; tls = two relays joined by a TLS tunnel."""
    relays: list[Relay] = []
    client, local_a = tcp_pair()
    if request.param == "plain":
        tunnel_a, far = tcp_pair()
        relays.append(Relay("a", local_a, PlainChannel(tunnel_a)))
    else:
        chan_a, chan_b, fut_c, fut_s = tls_pair()
        assert fut_c.result() == PB and fut_s.result() == PA
        local_b, far = tcp_pair()
        relays += [Relay("a", local_a, chan_a), Relay("b", local_b, chan_b)]
    for relay in relays:
        threading.Thread(target=relay.run, daemon=True).start()
    for s in (client, far):
        s.settimeout(10)
    yield client, far, relays
    for s in (client, far):
        s.close()
    for relay in relays:
        assert relay.closed.wait(5), f"relay {relay.name} did not close both sockets"


def test_bytes_arrive_intact_both_ways_and_half_close_propagates(path):
    client, far, relays = path
    upload, reply = os.urandom(3 << 20), os.urandom(2 << 20)
    client.sendall(upload)
    client.shutdown(socket.SHUT_WR)
    assert hashlib.sha256(read_all(far)).digest() == hashlib.sha256(upload).digest()  # ... then EOF
    far.sendall(reply)  # the other direction still flows after the half-close
    far.shutdown(socket.SHUT_WR)
    assert read_all(client) == reply
    assert all(r.closed.wait(5) and not r.aborted for r in relays)
    assert relays[0].to_tunnel == len(upload) and relays[0].from_tunnel == len(reply)


def test_a_reset_from_the_far_end_reaches_the_client_as_a_reset(path):
    client, far, relays = path
    client.sendall(b"hello")
    assert far.recv(5) == b"hello"
    reset(far)
    with pytest.raises(ConnectionResetError):
        client.recv(10)
    assert all(r.closed.wait(5) and r.aborted for r in relays)


def test_a_reset_from_the_client_reaches_the_far_end_as_a_reset(path):
    client, far, relays = path
    far.sendall(b"hi")
    assert client.recv(2) == b"hi"
    reset(client)
    with pytest.raises(ConnectionResetError):
        far.recv(10)


def test_an_idle_direction_does_not_block_the_other(path):
    client, far, _ = path
    for _ in range(50):
        client.sendall(b"ping")
        assert far.recv(4) == b"ping"
        far.sendall(b"pong")
        assert client.recv(4) == b"pong"


def test_abort_resets_both_ends_even_when_idle(path):
    client, far, relays = path
    relays[0].abort("test")
    for s in (client, far):
        with pytest.raises(ConnectionResetError):
            s.recv(10)


# --- TLS identity binding ---------------------------------------------------------------------------------------------

def test_tls_learns_each_side_s_identity_key():
    client, server, fut_c, fut_s = tls_pair()
    assert fut_c.result() == PB and fut_s.result() == PA
    client.sock.close()
    server.sock.close()


def test_tls_server_refuses_a_client_key_it_does_not_know():
    client, server, fut_c, fut_s = tls_pair(client_key=KC)
    with pytest.raises(OSError):
        fut_s.result()
    server.sock.close()
    with contextlib.suppress(OSError):
        fut_c.result()
    client.sock.close()
    server.sock.close()


def test_tls_client_refuses_a_server_that_is_not_the_expected_peer():
    client, server, fut_c, fut_s = tls_pair(client_expects=raw_public_key(KC))
    with pytest.raises(OSError):
        fut_c.result()
    client.sock.close()  # the server then sees the end of the failed handshake at once
    with contextlib.suppress(OSError):
        fut_s.result()
    client.sock.close()
    server.sock.close()


def test_tls_close_write_keeps_plaintext_that_was_already_buffered():
    """SSL_shutdown discards buffered application records; close_write must save them first."""
    client, server, fut_c, fut_s = tls_pair()
    fut_c.result(), fut_s.result()
    payload = os.urandom(100_000)  # several TLS records
    server.sendall(payload)
    time.sleep(0.2)  # let all records reach the client's socket
    one = memoryview(bytearray(1))
    assert client.read_into(one) == 1  # pulls every record into the BIO, consumes one byte
    client.close_write()
    assert server.read_into(memoryview(bytearray(10))) == 0  # the server sees our close_notify
    server.close_write()
    rest = bytearray()
    view = memoryview(bytearray(1 << 16))
    while n := client.read_into(view):
        rest += view[:n]
    assert bytes(one) + rest == payload
    client.sock.close()
    server.sock.close()


def test_setup_watchdog_cuts_a_stalled_setup_short_and_says_so():
    from arctic.dataplane.engine import SetupWatchdog

    watchdog = SetupWatchdog(interval=0.05)
    a, b = tcp_pair()
    with a, b:
        token = watchdog.watch(b, 0.2)
        start = time.monotonic()
        b.settimeout(10)
        assert b.recv(10) == b""  # the peer never sends; the watchdog ends the wait
        assert time.monotonic() - start < 2
        assert watchdog.release(token) is True
    c, d = tcp_pair()
    with c, d:
        assert watchdog.release(watchdog.watch(d, 5)) is False
