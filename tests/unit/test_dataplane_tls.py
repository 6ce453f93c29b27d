"""TLS between peers is bound to their identity keys (``arctic.dataplane.tls``): who may connect, and to whom."""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest
from arctic.dataplane import tls
from arctic.dataplane.keys import raw_public_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KA, KB, KC = (Ed25519PrivateKey.generate() for _ in range(3))
PA, PB = raw_public_key(KA), raw_public_key(KB)


def handshake(*, client_key=KA, client_expects=PB, server_trusts=(PA,)) -> tuple[bytes, bytes]:
    """A TLS handshake over a socket pair; (key the client saw, key the server saw) or OSError."""
    left, right = socket.socketpair()
    client_ctx = tls.client_context(client_key, client_expects)
    server_ctx = tls.server_context(KB, server_trusts)
    with left, right, ThreadPoolExecutor(1) as pool:
        left.settimeout(5)
        right.settimeout(5)

        def serve() -> bytes:
            with server_ctx.wrap_socket(right, server_side=True) as conn:
                key = tls.peer_public_key(conn.getpeercert(binary_form=True))
                conn.recv(1)
                return key

        server = pool.submit(serve)
        try:
            with client_ctx.wrap_socket(left, server_hostname=tls.PEER_NAME) as conn:
                seen = tls.peer_public_key(conn.getpeercert(binary_form=True))
                conn.sendall(b"x")
        except OSError:
            right.close()
            raise
        return seen, server.result(5)


def test_each_side_learns_the_other_side_s_identity_key():
    assert handshake() == (PB, PA)


def test_the_server_refuses_a_client_key_it_does_not_know():
    with pytest.raises((OSError, ssl.SSLError)):
        handshake(client_key=KC)


def test_the_client_refuses_a_server_that_is_not_the_expected_peer():
    with pytest.raises((OSError, ssl.SSLError)):
        handshake(client_expects=raw_public_key(KC))


def test_only_tls_1_3_is_spoken():
    assert tls.client_context(KA, PB).minimum_version == ssl.TLSVersion.TLSv1_3
    assert tls.server_context(KB, [PA]).minimum_version == ssl.TLSVersion.TLSv1_3
