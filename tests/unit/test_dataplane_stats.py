"""The master's merged stats: one view of every worker, and how fresh each worker's part of it is."""

from __future__ import annotations

from arctic.dataplane.stats import Stats, merge


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
