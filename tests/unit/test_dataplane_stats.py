"""The master's merged stats: one view of every worker, and how fresh each worker's part of it is."""

from __future__ import annotations

from arctic.dataplane.stats import RateMeter, Stats, merge


def _worker(index: int, reported_at: float, *, connections: int) -> dict:
    stats = Stats()
    for _ in range(connections):
        stats.opened("source")
        stats.relaying("source", "svc_1")
        stats.closed("source", to_tunnel=10, from_tunnel=20, service_id="svc_1")
    return stats.snapshot(worker=index, pid=1000 + index, reported_at=reported_at, sessions=[])


def test_counters_of_every_worker_are_summed_per_service():
    merged = merge([_worker(0, 100.0, connections=2), _worker(1, 101.0, connections=3)])
    assert merged["total_connections"] == 5
    assert merged["services"]["svc_1"]["source"] == 5
    assert merged["bytes"] == {"to_tunnel": 50, "from_tunnel": 100}


def test_each_worker_says_when_its_counters_were_taken():
    """A reader waiting for counters newer than an event must wait for the oldest worker, not the file's time."""
    merged = merge([_worker(0, 100.0, connections=0), _worker(1, 90.5, connections=0)], updated_at=101.0)
    assert [(w["worker"], w["pid"], w["reported_at"]) for w in merged["workers"]] == [(0, 1000, 100.0),
                                                                                        (1, 1001, 90.5)]
    assert merged["updated_at"] == 101.0


class _OpenStream:
    """What the stats read of a relaying stream: its service and the bytes it moved so far."""

    def __init__(self, service_id: str) -> None:
        self.service_id, self.up, self.down = service_id, 0, 0

    def relayed_bytes(self) -> tuple[int, int]:
        return self.up, self.down


def test_bytes_of_open_streams_count_as_they_move_and_once_when_they_close():
    stats = Stats()
    stream = _OpenStream("svc_1")
    stats.opened("source")
    stats.relaying("source", "svc_1", stream)
    stream.up, stream.down = 1000, 50
    live = stats.snapshot()["services"]["svc_1"]
    assert (live["bytes_to_tunnel"], live["bytes_from_tunnel"], live["active"]) == (1000, 50, 1)
    stream.up = 3000
    assert stats.snapshot()["services"]["svc_1"]["bytes_to_tunnel"] == 3000
    stats.closed("source", to_tunnel=3000, from_tunnel=50, service_id="svc_1", relayed=True, stream=stream)
    closed = stats.snapshot()["services"]["svc_1"]
    assert (closed["bytes_to_tunnel"], closed["bytes_from_tunnel"], closed["active"]) == (3000, 50, 0)


def test_the_last_connection_of_a_service_is_the_latest_of_any_worker():
    early, late = _worker(0, 100.0, connections=1), _worker(1, 100.0, connections=1)
    early["services"]["svc_1"]["last_stream_at"] = 1000
    late["services"]["svc_1"]["last_stream_at"] = 2000
    assert merge([early, late])["services"]["svc_1"]["last_stream_at"] == 2000
    assert merge([late, early])["services"]["svc_1"]["last_stream_at"] == 2000


def test_service_rates_cover_the_last_seconds_and_are_never_negative():
    meter = RateMeter()

    def at(now: float, up: int, down: int) -> tuple[float, float]:
        services = {"svc_1": {"bytes_to_tunnel": up, "bytes_from_tunnel": down}}
        meter.add_rates(now, services)
        return services["svc_1"]["rate_to_tunnel"], services["svc_1"]["rate_from_tunnel"]

    assert at(0.0, 0, 0) == (0.0, 0.0)
    assert at(1.0, 1000, 100) == (1000.0, 100.0)
    assert at(2.0, 2000, 200) == (1000.0, 100.0)
    for second in range(3, 10):
        rates = at(float(second), 1000 * second, 100 * second)
    assert rates == (1000.0, 100.0)
    assert at(10.0, 0, 0) == (0.0, 0.0)  # a restarted worker: counters from zero, rate 0 rather than negative
