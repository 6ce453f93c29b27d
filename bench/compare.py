"""What bench/throughput and bench/connections compare, and how.

Both measure the same systems in the same lab: ``direct`` routing, the HAProxy pair (plain and TLS) and Arctic
(plain and TLS) carrying a service with one route. The tunnel mode is agent configuration, so a run has two
phases, each measuring its Arctic mode together with the anchors it is compared with. The machines are noisy, so
each Arctic sample is divided by the anchor sample of the *same* round and the median of those ratios reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

ARCTIC_ROUTE = "192.168.100.0/24"  # the service's route: s1's LAN, reachable only through Arctic
PHASES = (("none", "arctic-plain", ("direct", "haproxy-plain")),  # (tunnel.encryption, Arctic system, anchors)
          ("tls", "arctic-tls", ("direct", "haproxy-tls")))
ORDER = ("direct", "haproxy-plain", "haproxy-tls", "arctic-plain", "arctic-tls")  # rows of the summary tables


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
