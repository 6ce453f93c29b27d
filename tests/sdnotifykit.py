"""Test support: the systemd side of sd_notify, a datagram socket the test binds and reads (NOTIFY_SOCKET).

``NotifyListener(path)`` binds a file-system socket (it works from inside lab namespaces: only abstract sockets are
per network namespace); ``NotifyListener.abstract()`` binds ``@arctic-test-<random>``. Every datagram is kept with
the wall-clock time it was read, so a test can compare it with times the agent reports.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Message:
    received_at: float  # time.time() when the test read it
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def parse(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n") if line)


class NotifyListener:
    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(address)
        self.messages: list[Message] = []

    @classmethod
    def abstract(cls) -> NotifyListener:
        return cls("\0arctic-test-" + secrets.token_hex(6))

    @property
    def env_value(self) -> str:
        """What NOTIFY_SOCKET must say for this socket."""
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    def receive(self, timeout: float) -> Message | None:
        """The next datagram, or None if none arrives within ``timeout`` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        message = Message(time.time(), parse(data))
        self.messages.append(message)
        return message

    def wait_for(self, what: str, predicate: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        """Read datagrams until one satisfies ``predicate``; AssertionError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and predicate(message):
                return message
        seen = "\n".join(repr(m.fields) for m in self.messages[-20:])
        raise AssertionError(f"no {what} within {timeout:.0f}s; last datagrams:\n{seen}")

    def drain(self) -> list[Message]:
        """Whatever is queued now (non-blocking)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    return out
                out.append(Message(time.time(), parse(data)))
                self.messages.append(out[-1])
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("\0"):
            Path(self.address).unlink(missing_ok=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
