"""Which session a new stream takes (``arctic.dataplane.sessions``), with a fake transport: no network.

An unlimited service shares one warm session per worker; a limited one gives each concurrent stream a slot
session of its own while the worker has free slots (HTB then shares the limit fairly between them), and a
session that drops is dialed again at once.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from arctic.dataplane import handshake
from arctic.dataplane.config import parse_config
from arctic.dataplane.sessions import SessionPool
from arctic.dataplane.stats import Stats
from arctic.dataplane.transports import Established

A = "peer_01HZY3K8J5Q2W9V4XN7R6T0AAA"
B = "peer_01HZY3K8J5Q2W9V4XN7R6T0BBB"
SVC = "svc_01HZY3K8J5Q2W9V4XN7R6T0S01"
KEY = "A" * 43 + "="  # any 32 bytes, base64


def config(limit: int):
    return parse_config({
        "local_peer_id": A, "identity_key_file": "/nonexistent",
        "peers": {A: {"public_key": KEY, "tunnel_address": "198.18.0.1"},
                  B: {"public_key": KEY, "tunnel_address": "198.18.0.2"}},
        "services": [{"id": SVC, "source_peer_id": A, "target_peer_id": B, "bandwidth_limit_mbps": limit,
                      "so_priorities": [0x610100 + i for i in range(16)],
                      "routes": [{"id": 1, "dest_cidr": "192.168.100.0/24", "seq": 1}]}],
    })


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def set_write_buffer_limits(self, high=None, low=None) -> None: ...
    def set_protocol(self, protocol) -> None: ...
    def resume_reading(self) -> None: ...
    def pause_reading(self) -> None: ...
    def writelines(self, data) -> None: ...
    def write(self, data) -> None: ...
    def get_extra_info(self, name, default=None): return default
    def abort(self) -> None: self.closed = True
    def close(self) -> None: self.closed = True


class FakeDialer:
    """Every dial waits until the test lets it finish (``finish``) or fail."""

    name = "tcp"

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, asyncio.Future]] = []
        self.priorities: Counter = Counter()

    async def dial(self, peer, hello, *, priority: int) -> Established:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((hello.slot, priority, future))
        self.priorities[priority] += 1
        await future
        keys = handshake.SessionKeys(os.urandom(32), os.urandom(32), os.urandom(32))
        return Established(transport=FakeTransport(), hello=hello, keys=keys, token=bytes(16), peer_window=65536,
                           mac=None, encrypted=True)

    def finish_all(self, error: Exception | None = None) -> None:
        for _slot, _priority, future in self.pending:
            if not future.done():
                future.set_exception(error) if error else future.set_result(None)
        self.pending.clear()


class Log:
    def info(self, *a, **k): ...
    def warning(self, *a, **k): ...


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def pool_for(limit: int, *, worker: int = 0, workers: int = 2) -> tuple[SessionPool, FakeDialer]:
    dialer = FakeDialer()
    pool = SessionPool(transports={"tcp": dialer}, stats=Stats(), log=Log(), worker_index=worker,
                       worker_count=workers)
    pool.update(config(limit))
    return pool, dialer


def run(coro):
    return asyncio.run(coro)


def test_the_first_session_is_dialed_as_soon_as_the_service_is_configured_on_the_workers_own_slot():
    async def main():
        pool, dialer = pool_for(0, worker=1, workers=2)
        await settle()
        assert [(slot, prio) for slot, prio, _ in dialer.pending] == [(1, 0x610101)]  # worker 1: slots 1, 3, ...

    run(main())


def test_an_unlimited_service_puts_every_stream_on_its_one_warm_session():
    async def main():
        pool, dialer = pool_for(0)
        await settle()
        dialer.finish_all()
        await settle()
        group = pool.group(SVC)
        picked = {id(group.pick(lambda *_: pytest.fail("no wait expected"))) for _ in range(10)}
        assert len(picked) == 1 and len(dialer.pending) == 0

    run(main())


def test_a_limited_service_gives_each_concurrent_stream_a_slot_session_of_its_own():
    async def main():
        pool, dialer = pool_for(50)
        await settle()
        dialer.finish_all()
        await settle()
        group = pool.group(SVC)
        first = group.pick(lambda *_: None)
        assert first is not None
        first.streams[1] = object()  # the first stream is busy on it
        got: list = []
        assert group.pick(lambda session, reason: got.append(session)) is None  # waits for a new slot session
        await settle()
        assert [slot for slot, _, _ in dialer.pending] == [2]  # worker 0 of 2: slots 0, 2, 4, ...
        dialer.finish_all()
        await settle()
        assert got and got[0] is not first and got[0].slot == 2

    run(main())


def test_a_stream_arriving_during_the_first_dial_waits_for_it_and_is_refused_if_it_fails():
    async def main():
        pool, dialer = pool_for(0)
        await settle()
        outcome: list = []
        assert pool.group(SVC).pick(lambda session, reason: outcome.append((session, reason))) is None
        dialer.finish_all(OSError("connection refused"))
        await settle()
        assert outcome and outcome[0][0] is None and "connection refused" in outcome[0][1]

    run(main())


def test_a_lost_session_is_dialed_again_at_once():
    async def main():
        pool, dialer = pool_for(0)
        await settle()
        dialer.finish_all()
        await settle()
        session = pool.group(SVC).sessions[0]
        session.close("connection lost: reset")
        await asyncio.sleep(0.01)  # the first retry has no back-off
        assert [slot for slot, _, _ in dialer.pending] == [0]
        assert pool.reconnects[B] == 1

    run(main())


def test_a_removed_service_stops_dialing_and_closes_its_idle_sessions():
    async def main():
        pool, dialer = pool_for(0)
        await settle()
        dialer.finish_all()
        await settle()
        session = pool.group(SVC).sessions[0]
        pool.update(parse_config({"local_peer_id": A, "identity_key_file": "/nonexistent"}))
        assert session.closed and pool.group(SVC) is None
        await settle()
        assert not dialer.pending

    run(main())
