"""The benchmarks' percentile: nearest rank, so every reported figure is a latency that was really measured."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from probekit import percentile  # noqa: E402


def test_nearest_rank_picks_a_measured_value():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [percentile(values, q) for q in (0, 20, 50, 90, 99, 100)] == [1.0, 1.0, 3.0, 5.0, 5.0, 5.0]


def test_no_values_give_zero_rather_than_an_error():
    assert percentile([], 99) == 0.0
