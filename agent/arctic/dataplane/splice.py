"""Zero-copy relaying on the event loop: ``os.splice`` socket -> pipe -> socket, driven by readiness callbacks.

A bulk stream on a lane (``lanes``) is a plain TCP socket on each side, so the kernel can move its bytes without
them ever entering Python: each direction has a pipe (1 MiB); when the source socket is readable we splice as
much as the pipe takes, then splice the pipe into the destination until it would block. If the destination is
full we stop reading until it is writable again, so memory stays at one pipe per direction. No thread: the loop
only wakes up when there is something to move.

End of stream follows TCP: EOF on the source, once the pipe is empty, becomes ``shutdown(SHUT_WR)`` on the
destination; an error on either socket aborts the pump (the owner then resets both sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class SplicePump:
    """One direction ``src`` -> ``dst``; ``done(error)`` once it ended (None = clean EOF, passed on)."""

    __slots__ = ("loop", "src", "dst", "done", "counted", "_r", "_w", "_pending", "_eof", "_finished",
                 "_reading", "_writing")

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket,
                 done: Callable[[SplicePump, BaseException | None], None]) -> None:
        self.loop, self.src, self.dst, self.done = loop, src, dst, done
        self.counted = 0  # bytes moved to ``dst``
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._w, F_SETPIPE_SZ, PIPE_SIZE)
        self._pending = 0  # bytes in the pipe
        self._eof = False
        self._finished = False
        self._reading = self._writing = False

    def start(self) -> None:
        self._want_read(True)
        self._readable()  # bytes may already be waiting (the kernel will not tell us again)

    def _want_read(self, on: bool) -> None:
        if on != self._reading:
            self._reading = on
            if on:
                self.loop.add_reader(self.src.fileno(), self._readable)
            else:
                self.loop.remove_reader(self.src.fileno())

    def _want_write(self, on: bool) -> None:
        if on != self._writing:
            self._writing = on
            if on:
                self.loop.add_writer(self.dst.fileno(), self._writable)
            else:
                self.loop.remove_writer(self.dst.fileno())

    def _readable(self) -> None:
        if self._finished:
            return
        try:
            while not self._eof and self._pending < PIPE_SIZE:
                try:
                    n = os.splice(self.src.fileno(), self._w, PIPE_SIZE - self._pending, flags=_FLAGS)
                except BlockingIOError:
                    break
                if n == 0:
                    self._eof = True
                    break
                self._pending += n
                if not self._drain():
                    break
            self._drain()
        except OSError as err:
            self._finish(err)
            return
        self._after()

    def _writable(self) -> None:
        if self._finished:
            return
        try:
            self._drain()
        except OSError as err:
            self._finish(err)
            return
        self._after()

    def _drain(self) -> bool:
        """Move the pipe into ``dst``; True if it is empty now."""
        while self._pending:
            try:
                n = os.splice(self._r, self.dst.fileno(), self._pending, flags=_FLAGS)
            except BlockingIOError:
                return False
            self._pending -= n
            self.counted += n
        return True

    def _after(self) -> None:
        if self._pending:
            self._want_read(False)
            self._want_write(True)
            return
        self._want_write(False)
        if self._eof:
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
            self._finish(None)
        else:
            self._want_read(True)

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self.close()
        self.done(self, error)

    def close(self) -> None:
        """Stop watching the sockets and free the pipe (the sockets stay open: their owner closes them)."""
        with contextlib.suppress(OSError, ValueError):
            self._want_read(False)
        with contextlib.suppress(OSError, ValueError):
            self._want_write(False)
        for fd in (self._r, self._w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._r = self._w = -1

    @property
    def finished(self) -> bool:
        return self._finished


def is_reset(error: BaseException | None) -> bool:
    return isinstance(error, OSError) and error.errno not in _AGAIN
