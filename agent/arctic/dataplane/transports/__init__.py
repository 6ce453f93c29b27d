"""Transports: how a session's bytes travel between two peers (``tcp``: TCP or TLS 1.3 over TCP; ``kcp``: KCP on UDP).

A transport does two things for the session layer above it, and nothing else:

* ``dial(peer, hello, priority)``: reach a peer, run the identity handshake (``handshake``) and hand back an
  ``Established`` link: an asyncio transport carrying an ordered byte stream, the session keys, and whether
  control frames still need a MAC (not when the transport already authenticates every byte, as TLS does);
* listen on the tunnel port and hand each authenticated incoming link to the worker (``Accepting``).

The session layer (``session``, ``streams``) then runs the same way over any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ..handshake import ANY_WORKER, ControlMac, HandshakeError, Hello, SessionKeys


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


async def dial_steered(dial_once: Callable[[Hello], Awaitable[Established]], hello: Hello,
                       attempts: int) -> Established:
    """Dial until the link lands on the target worker ``hello.want`` names, then settle for any worker.

    The kernel picks the worker of an incoming link (SO_REUSEPORT); the wrong one refuses with ``wrong_worker``
    and a fresh dial (a new source port) usually lands elsewhere. Steering makes the source's workers meet distinct
    target workers, so both sides use every CPU; it is an optimisation, never a reason to fail.
    """
    for _ in range(attempts):
        try:
            return await dial_once(hello)
        except HandshakeError as err:
            if err.reason != "wrong_worker":
                raise
    return await dial_once(replace(hello, want=ANY_WORKER))
