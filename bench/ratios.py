"""Ratios between systems measured in the same rounds: the machines are noisy, so a benchmark compares each
Arctic sample with the anchor sample of the *same* round and reports the median of those per-round ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any


def paired_median_ratio(samples: Iterable[Any], numerator: str, denominator: str, value: Callable[[Any], float],
                        where: Callable[[Any], bool] = lambda _s: True) -> tuple[float, int] | None:
    """Median over rounds of value(numerator) / value(denominator), pairing samples by (phase, round).

    Samples need ``system``, ``phase`` and ``round``; ``where`` narrows them (e.g. one flow count). Returns
    (median rounded to 3 places, number of paired rounds), or None when no round has both systems.
    """
    chosen = [s for s in samples if where(s)]
    nums = {(s.phase, s.round): value(s) for s in chosen if s.system == numerator}
    per_round = [nums[(s.phase, s.round)] / value(s) for s in chosen
                 if s.system == denominator and (s.phase, s.round) in nums and value(s) > 0]
    if not per_round:
        return None
    return round(statistics.median(per_round), 3), len(per_round)
