"""Tunnel channels: the peer-to-peer TCP connection, either plaintext or TLS, behind one small interface.

``PlainChannel`` is a bare socket; the relay later moves its bytes with ``os.splice``.

``TlsChannel`` drives an ``ssl.SSLObject`` over memory BIOs instead of using ``SSLSocket``, for two reasons:

* speed - one ``recv_into`` of up to 256 KiB feeds many TLS records, and one ``sendall`` ships a whole batch
  of encrypted records, where ``SSLSocket`` costs two syscalls per 16 KiB record on read and one per record on
  write;
* threads - the relay runs one thread per direction, and an OpenSSL connection must not be used by two
  threads at once. Every call into the SSL object holds ``_ssl_lock`` (only for the CPU work, never while
  blocked on the network); writes to the socket hold ``_send_lock`` so record batches are never interleaved.
  Lock order is always send then ssl.

Half-close is TLS ``close_notify`` followed by TCP ``SHUT_WR`` (TLS 1.3 allows the other direction to carry on).
A TCP EOF *without* close_notify raises ``TruncatedStream``: the relay then resets rather than pretending the
stream ended cleanly.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

from .tls import peer_public_key

TLS_READ_SIZE = 256 * 1024  # the most one socket read takes in; buffers start at 1/4 and grow on bulk traffic


class TruncatedStream(ConnectionError):
    """The TLS peer closed TCP without close_notify (crash, or somebody injecting a FIN)."""


class StreamClosed(ConnectionError):
    """The peer closed the stream before the expected number of bytes arrived."""


class PlainChannel:
    tls = False

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes and not one more, so the splice relay that follows starts at the right byte."""
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise StreamClosed(f"stream closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)


class TlsChannel:
    tls = True

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool,
                 session: ssl.SSLSession | None = None) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=server_side, session=session)
        self._ssl_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._rbuf = bytearray(TLS_READ_SIZE // 4)
        self._rview = memoryview(self._rbuf)
        self._stash = bytearray()  # plaintext decrypted early by close_write (see there)
        self._peer_closed = False  # close_notify received

    # --- handshake -----------------------------------------------------------------------------------------

    def handshake(self) -> bytes:
        """Complete the TLS 1.3 handshake (socket timeout applies); returns the peer's raw Ed25519 key."""
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        self._flush()
        return peer_public_key(self._obj.getpeercert(binary_form=True))

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, with its resumption ticket once one was read (client side)."""
        return self._obj.session

    @property
    def resumed(self) -> bool:
        return self._obj.session_reused

    # --- sending -------------------------------------------------------------------------------------------

    def sendall(self, data) -> None:
        with self._send_lock:
            with self._ssl_lock:
                self._obj.write(data)
                out = self._out.read()
            self.sock.sendall(out)

    def close_write(self) -> None:
        """Send close_notify and FIN; reading continues.

        ``SSLObject.unwrap`` calls SSL_shutdown twice, and the second call *discards* application records that
        are already buffered. So first decrypt everything buffered into ``_stash``; ``read_into`` serves it.
        """
        with self._send_lock:
            with self._ssl_lock:
                self._drain_buffered()
                with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    self._obj.unwrap()
                out = self._out.read()
            if out:
                self.sock.sendall(out)
            self.sock.shutdown(socket.SHUT_WR)

    def _drain_buffered(self) -> None:
        if self._peer_closed:
            return
        try:
            while True:
                chunk = self._obj.read(TLS_READ_SIZE)
                if not chunk:  # close_notify received
                    self._peer_closed = True
                    break
                self._stash += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._peer_closed = True

    def _flush(self) -> None:
        with self._send_lock:
            with self._ssl_lock:
                out = self._out.read()
            if out:
                self.sock.sendall(out)

    def _fill(self) -> None:
        n = self.sock.recv_into(self._rbuf)
        if n == 0:
            raise TruncatedStream("the tunnel peer closed the connection without TLS close_notify")
        with self._ssl_lock:
            self._in.write(self._rview[:n])
        if n == len(self._rbuf) < TLS_READ_SIZE:  # a bulk flow: read more per syscall from now on
            self._rbuf = bytearray(TLS_READ_SIZE)
            self._rview = memoryview(self._rbuf)

    # --- receiving -----------------------------------------------------------------------------------------

    def read_into(self, view: memoryview) -> int:
        """Block until some plaintext is available; fill as much of ``view`` as is decryptable; 0 = clean EOF."""
        size = len(view)
        while True:
            filled = 0
            with self._ssl_lock:
                if self._stash:
                    filled = min(size, len(self._stash))
                    view[:filled] = self._stash[:filled]
                    del self._stash[:filled]
                if not self._peer_closed:
                    try:
                        while filled < size:
                            got = self._obj.read(size - filled, view[filled:])
                            if not got:  # close_notify received (ssl returns 0 rather than raising)
                                self._peer_closed = True
                                break
                            filled += got
                    except ssl.SSLWantReadError:
                        pass
                    except ssl.SSLZeroReturnError:
                        self._peer_closed = True
                flush = self._out.pending > 0
            if flush:  # e.g. an alert or key update answer produced by reading
                self._flush()
            if filled or self._peer_closed:
                return filled
            self._fill()

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.read_into(view[got:])
            if k == 0:
                raise StreamClosed(f"stream closed after {got} of {n} bytes")
            got += k
        return bytes(buf)
