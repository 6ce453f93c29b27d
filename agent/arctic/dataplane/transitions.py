"""Configuration changes never reset a connection: what a worker does while its peer and its kernel catch up.

A change to a service or a route reaches four places at different moments: this peer's nftables (the reconciler
applies the kernel first) and data plane (a reload a few milliseconds later), and the same two on the other peer
(after replication, a second or so later). Measured before this module: with connections arriving back to back, a
route added mid-stream reset 30 of them and a service created with its route 180. Three gaps, three answers:

1. **Source, a new route diverted before this data plane has it.** No route matches: the connection waits for
   the next configuration (at most ``SOURCE_WAIT``) and is classified again, instead of being refused ``no_route``.
2. **Target, a service or route it does not have yet** (the source learned of it first). The stream is accepted
   (what the client sends meanwhile is kept) and waits for the next configuration (at most ``TARGET_WAIT``)
   instead of being refused ``unknown_service`` / ``destination_not_routed``.
3. **Target, a service or route it removed while the source still diverts to it** (the source learns later). The
   configurations of the last ``RETIRED_GRACE`` seconds still admit the stream, so it completes.

A connection that no configuration admits within those bounds is refused as before, with the same reason: the
bounds only cover how long two peers may disagree, they do not open anything a peer was never configured for.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .config import DataplaneConfig

SOURCE_WAIT = 3.0  # seconds: the reconciler writes the data-plane config right after the nft table
TARGET_WAIT = 5.0  # seconds: replication to the target and its reconcile run
RETIRED_GRACE = 15.0  # seconds: the source's replication, reconcile and reload, with margin
NOT_KNOWN_YET = frozenset({"unknown_service", "destination_not_routed"})  # what a configuration change may fix


@dataclass(eq=False)  # kept in a set: identity, not value
class _Waiter:
    retry: Callable[[], bool]  # True once settled (admitted, refused otherwise, or gone)
    give_up: Callable[[], None]
    deadline: float
    timer: asyncio.TimerHandle | None = None


class Transitions:
    """The worker's recent configurations and the connections waiting for the next one (one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._retired: collections.deque[tuple[float, DataplaneConfig]] = collections.deque()
        self._waiting: set[_Waiter] = set()

    def wait(self, retry: Callable[[], bool], give_up: Callable[[], None], seconds: float) -> None:
        """Call ``retry`` after each configuration change until it returns True; ``give_up`` after ``seconds``."""
        self._park(_Waiter(retry, give_up, self.loop.time() + seconds))

    def retired(self) -> Iterator[DataplaneConfig]:
        """The configurations replaced in the last ``RETIRED_GRACE`` seconds, newest first."""
        now = self.loop.time()
        while self._retired and self._retired[-1][0] <= now:
            self._retired.pop()
        return (cfg for _until, cfg in list(self._retired))

    def changed(self, previous: DataplaneConfig) -> None:
        """A new configuration runs: remember the one it replaced; let every waiting connection try again."""
        self._retired.appendleft((self.loop.time() + RETIRED_GRACE, previous))
        waiting, self._waiting = self._waiting, set()
        for waiter in waiting:
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.retry():
                self._park(waiter)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _park(self, waiter: _Waiter) -> None:
        if waiter.deadline <= self.loop.time():
            waiter.give_up()
            return
        self._waiting.add(waiter)
        waiter.timer = self.loop.call_at(waiter.deadline, self._expired, waiter)

    def _expired(self, waiter: _Waiter) -> None:
        self._waiting.discard(waiter)
        waiter.give_up()
