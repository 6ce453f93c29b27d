"""Transports: how a session's bytes travel between two peers (``tcp`` today: TCP, or TLS 1.3 over TCP).

A transport does two things for the session layer above it, and nothing else:

* ``dial(peer, hello, priority)``: reach a peer, run the identity handshake (``handshake``) and hand back an
  ``Established`` link: an asyncio transport carrying an ordered byte stream, the session keys, and whether
  control frames still need a MAC (not when the transport already authenticates every byte, as TLS does);
* listen on the tunnel port and hand each authenticated incoming link to the worker (``Accepting``).

The session layer (``session``, ``streams``) then runs the same way over any of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from ..handshake import ControlMac, Hello, SessionKeys


@dataclass
class Established:
    """An authenticated link, ready to carry a session."""

    transport: asyncio.Transport
    hello: Hello  # what the client asked for (service, slot, client's window)
    keys: SessionKeys
    token: bytes
    peer_window: int  # the peer's receive window per stream
    mac: ControlMac | None  # None: the transport authenticates every byte itself
    encrypted: bool
    leftover: bytes = b""  # bytes read past the handshake (the session's first frames)
    resumed: bool = False  # TLS resumed a previous session


class Accepting(Protocol):
    """What a transport's listener calls (the worker's target side)."""

    def link_established(self, link: Established, transport_name: str) -> None: ...

    def link_failed(self, reason: str, detail: str, remote: str) -> None: ...

    def steered(self) -> None:
        """A connection reached the wrong worker and was sent on (not a failure)."""
