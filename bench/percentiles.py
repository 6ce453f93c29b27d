"""The one percentile every benchmark reports (standard library only: the probes import it inside lab hosts)."""

from __future__ import annotations

import math


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100 (0.0 for no values): always a value that was measured."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
