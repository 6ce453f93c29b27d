"""Moving bytes both ways between a local TCP connection and a tunnel channel, with TCP's end semantics.

One thread per direction, blocking I/O (measured fastest here, see dataplane-anchors.md section 3.3):

* plaintext tunnels use ``os.splice`` socket -> pipe -> socket, so payload never enters Python;
* TLS tunnels read into one reused buffer (64 KiB, growing to 256 KiB once a flow proves to be bulk, so idle
  connections stay cheap) and hand whole batches to ``TlsChannel``.

End of stream, as TCP would do it end to end:

* **half-close**: when one side sends FIN, the other side gets ``shutdown(SHUT_WR)`` (TLS: close_notify + FIN)
  after every byte before it was delivered; the opposite direction keeps flowing;
* **reset**: when one side resets (or the TLS stream is truncated), ``abort`` sets SO_LINGER 0 on both sockets
  and wakes the other direction with ``shutdown(SHUT_RD)`` (which sends nothing), so both sockets are closed with
  RST and the far ends fail rather than seeing a clean end. A writer stuck on a peer that never reads is woken
  by a full ``shutdown`` after a grace second.

Sockets are closed only when both directions have stopped, so a file descriptor is never reused under a
thread that is still blocked on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable

from .channels import PlainChannel, TlsChannel
from .netsock import linger_zero

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024
COPY_BUFFER = 256 * 1024  # TLS relay buffer for bulk flows; connections start at 1/4 and grow when it fills
ABORT_GRACE = 1.0


class Relay:
    """A connection being relayed: ``local`` (client or server socket) <-> ``channel`` (tunnel)."""

    def __init__(self, name: str, local: socket.socket, channel: PlainChannel | TlsChannel,
                 on_close: Callable[[Relay], None] | None = None) -> None:
        self.name = name
        self.local = local
        self.channel = channel
        self.tunnel = channel.sock
        self.on_close = on_close
        self.started = time.monotonic()
        self.to_tunnel = 0  # bytes local -> tunnel, written only by that direction's thread
        self.from_tunnel = 0
        self.aborted = False
        self.abort_reason: str | None = None
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._stopped = 0
        for sock in (self.local, self.tunnel):
            sock.settimeout(None)  # splice needs blocking descriptors

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def run(self, spawn: Callable[[Callable[[], None]], None] | None = None) -> None:
        """Start the tunnel -> local direction on another thread (``spawn``, e.g. a ``WorkerPool.submit``; default a
        new thread) and run local -> tunnel in this one."""
        if isinstance(self.channel, TlsChannel):
            up, down = self._tls_up, self._tls_down
        else:
            up, down = self._splice_up, self._splice_down
        try:
            if spawn is not None:
                spawn(lambda: self._direction(down))
            else:
                threading.Thread(target=self._direction, args=(down,), name=f"{self.name}-down", daemon=True).start()
        except RuntimeError:  # cannot start a thread: give up on this connection cleanly
            self.abort("no thread available")
            self._direction_stopped()
            self._direction_stopped()
            return
        self._direction(up)

    def abort(self, reason: str) -> None:
        """Reset both sides (idempotent); the pumps notice and stop."""
        with self._lock:
            if self.aborted:
                return
            self.aborted, self.abort_reason = True, reason
        for sock in (self.local, self.tunnel):
            linger_zero(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def force(self) -> None:
        """Wake a direction blocked on a full send buffer (sends FIN before the RST; last resort)."""
        for sock in (self.local, self.tunnel):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _direction(self, pump: Callable[[], None]) -> None:
        failed = False
        try:
            pump()
        except Exception as err:  # any error on either socket means the connection is broken: reset both
            failed = True
            self.abort(f"{type(err).__name__}: {err}")
        finally:
            self._direction_stopped()
        if failed and not self.closed.wait(ABORT_GRACE):
            self.force()

    def _direction_stopped(self) -> None:
        with self._lock:
            self._stopped += 1
            last = self._stopped == 2
        if not last:
            return
        for sock in (self.local, self.tunnel):
            if self.aborted:
                linger_zero(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self.closed.set()
        if self.on_close is not None:
            self.on_close(self)

    def _end_of_stream(self, shut: Callable[[], None]) -> None:
        """Propagate a FIN, unless the EOF we saw was our own abort waking the reader."""
        if not self.aborted:
            shut()

    # --- plaintext: zero copy ----------------------------------------------------------------------------------

    def _splice(self, src: socket.socket, dst: socket.socket, counter: str) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(wfd, F_SETPIPE_SZ, PIPE_SIZE)
            sfd, dfd = src.fileno(), dst.fileno()
            splice, move = os.splice, os.SPLICE_F_MOVE
            while True:
                n = splice(sfd, wfd, PIPE_SIZE, flags=move)
                if n == 0:
                    break
                while n:
                    sent = splice(rfd, dfd, n, flags=move)
                    n -= sent
                    setattr(self, counter, getattr(self, counter) + sent)
        finally:
            os.close(rfd)
            os.close(wfd)
        self._end_of_stream(lambda: dst.shutdown(socket.SHUT_WR))

    def _splice_up(self) -> None:
        self._splice(self.local, self.tunnel, "to_tunnel")

    def _splice_down(self) -> None:
        self._splice(self.tunnel, self.local, "from_tunnel")

    # --- TLS: one big buffer per direction -------------------------------------------------------------------------

    def _tls_up(self) -> None:
        channel = self.channel
        assert isinstance(channel, TlsChannel)
        buf = bytearray(COPY_BUFFER // 4)
        view = memoryview(buf)
        recv_into, send = self.local.recv_into, channel.sendall
        while True:
            n = recv_into(buf)
            if n == 0:
                break
            send(view[:n])
            self.to_tunnel += n
            if n == len(buf) < COPY_BUFFER:
                buf = bytearray(COPY_BUFFER)
                view = memoryview(buf)
        self._end_of_stream(channel.close_write)

    def _tls_down(self) -> None:
        channel = self.channel
        assert isinstance(channel, TlsChannel)
        view = memoryview(bytearray(COPY_BUFFER // 4))
        read_into, sendall = channel.read_into, self.local.sendall
        while True:
            n = read_into(view)
            if n == 0:
                break
            sendall(view[:n])
            self.from_tunnel += n
            if n == len(view) < COPY_BUFFER:
                view = memoryview(bytearray(COPY_BUFFER))
        self._end_of_stream(lambda: self.local.shutdown(socket.SHUT_WR))
