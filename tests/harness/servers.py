"""TCP servers that live in a lab host: the accept loop, one thread per connection, and a clean close.

Tests subclass ``LabServer`` and write ``handle(conn, peer)``; the listening socket is created inside the host's
namespace (so it binds the host's addresses), everything else runs on ordinary threads of the test process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import ABC, abstractmethod
from typing import Any


class LabServer(ABC):
    def __init__(self, host: Any, ip: str, port: int, *, backlog: int = 1024) -> None:
        self.sock: socket.socket = host.call(self._listen, ip, port, backlog)
        self.accepted: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name=f"lab-server-{ip}:{port}", daemon=True).start()

    @staticmethod
    def _listen(ip: str, port: int, backlog: int = 1024) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(backlog)
        return sock

    @abstractmethod
    def handle(self, conn: socket.socket, peer: tuple) -> None:
        """Serve one accepted connection (a 60 s socket timeout is set; OSError ends it quietly)."""

    def count(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self.accepted)

    def _loop(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(peer)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: tuple) -> None:
        with conn:
            conn.settimeout(60)
            with contextlib.suppress(OSError):
                self.handle(conn, peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
