#!/usr/bin/env python3
"""Routes benchmark: API call -> rules in the kernel for 100 / 1,000 / 10,000 routes, and the connection rate
with 10,000 routes against 10.

    sudo .venv/bin/python bench/routes/run.py [--runs 3] [--sizes 100,1000,10000] [--rate-sizes 10,10000]
                                              [--count 2000] [--seconds 3] [--encryption tls] [--json FILE] [--quick]

Two real agents in ``harness.transit`` (agent-a is the source peer, agent-b the target), driven through the REST API
from the ``ctl`` host.

* **Apply time.** A fresh service gets N routes in one ``POST /v1/services/{id}/routes``; the clock runs from
  the call until every one of them is visible in ``nft list table inet arctic`` on agent-a (counted by the
  ``arctic <service> route <n>`` comments that every rule and set element carries). The table is polled every
  ``--poll`` seconds, so a figure is late by at most one poll plus one listing (both printed). The service is
  then deleted (timed the same way, for information). Target (issue 4): 10,000 routes under 2 s.
* **Connection rate.** A fresh service gets, in one batch, N-1 routes that never match the test flow and one that
  does (``dest 192.168.100.0/24``); ``bench/connections/probe.py`` then measures connections per second and TTFB
  from cl to s1 through it. The non-matching routes mix 20 shapes (destination-only /20../32, source-only,
  source+destination), most of them ahead of the matching route in precedence order, so both the kernel rules
  and the data plane's route lookup see them first. Target: rate with 10,000 routes >= 0.9 x the rate with 10.

Medians over ``--runs`` rounds; the rate ratio is the median of per-round ratios. Timing never fails the run;
the exit status is non-zero only if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT / "agent")]

from connections.run import PORT, Load, measure, start_greeter  # noqa: E402
from harness import Lab, transit  # noqa: E402
from harness.arcticlab import ArcticPair, wait_until  # noqa: E402

MATCHING_ROUTE = {"dest_cidr": "192.168.100.0/24", "priority": 100}
DEST_POOL = ipaddress.ip_network("10.64.0.0/10")  # inside the lab's 10.0.0.0/8, never a destination of traffic
SOURCE_POOL = ipaddress.ip_network("10.128.0.0/9")  # never a source of traffic (the client is 10.0.0.2)
# (source prefix length, destination prefix length); None = that side is not part of the route
SHAPES = ([(None, d) for d in range(20, 33)] + [(s, None) for s in (20, 24, 28, 32)]
          + [(24, 24), (24, 32), (32, 32)])
APPLY_TARGET_S, RATE_TARGET = 2.0, 0.9


def _nth(pool: ipaddress.IPv4Network, prefixlen: int, k: int) -> str:
    net = ipaddress.ip_network((int(pool.network_address) + k * 2 ** (32 - prefixlen), prefixlen))
    if not net.subnet_of(pool):
        raise ValueError(f"route {k} of /{prefixlen} does not fit in {pool}")
    return str(net)


def non_matching_routes(n: int) -> list[dict]:
    """``n`` distinct routes of mixed shapes that no lab connection matches (deterministic)."""
    routes = []
    for i in range(n):
        src_len, dst_len = SHAPES[i % len(SHAPES)]
        k = i // len(SHAPES)
        route: dict = {"priority": 100}
        if src_len is not None:
            route["source_cidr"] = _nth(SOURCE_POOL, src_len, k)
        if dst_len is not None:
            route["dest_cidr"] = _nth(DEST_POOL, dst_len, k)
        routes.append(route)
    return routes


@dataclass
class Apply:
    round: int
    routes: int
    api_s: float
    kernel_s: float
    polls: int
    listing_s: float
    delete_s: float


@dataclass
class Rate:
    round: int
    routes: int
    rate: float
    p50_ms: float
    p99_ms: float
    completed: int
    errors: dict[str, int]


class Bench:
    def __init__(self, pair: ArcticPair, poll: float) -> None:
        self.pair, self.poll = pair, poll

    def rules_of(self, sid: str) -> tuple[int, float]:
        """How many routes of ``sid`` agent-a's kernel has, and how long listing the table took."""
        t0 = time.monotonic()
        listing = self.pair.nft_table("a")
        return listing.count(f'"arctic {sid} route '), time.monotonic() - t0

    def wait_rules(self, sid: str, expected: int, t0: float, timeout: float = 120.0) -> tuple[float, int, float]:
        """Seconds from ``t0`` until agent-a's kernel holds ``expected`` routes of ``sid``; polls; max listing s."""
        polls, slowest = 0, 0.0
        while True:
            count, listing = self.rules_of(sid)
            polls, slowest = polls + 1, max(slowest, listing)
            if count == expected:
                return time.monotonic() - t0, polls, slowest
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{sid}: {count} of {expected} routes in agent-a's kernel after {timeout:.0f}s")
            time.sleep(self.poll)

    def forget(self, sid: str) -> float:
        """Delete service ``sid``; seconds until none of its rules is left in agent-a's kernel."""
        t0 = time.monotonic()
        self.pair.api("DELETE", f"/v1/services/{sid}")
        elapsed, _, _ = self.wait_rules(sid, 0, t0)
        for name in ("a", "b"):  # before the next service, both data planes must have dropped this one
            wait_until(lambda name=name: sid not in json.dumps(self.pair.dataplane_config(name)), timeout=60,
                       what=f"agent-{name}'s data plane to forget {sid}")
        return elapsed

    def apply(self, rnd: int, n: int) -> Apply:
        sid = self.pair.create_service(name=f"bench-routes-{n}-{rnd}")
        routes = non_matching_routes(n)
        t0 = time.monotonic()
        self.pair.add_routes(sid, *routes)
        api = time.monotonic() - t0
        kernel, polls, listing = self.wait_rules(sid, n, t0)
        return Apply(rnd, n, round(api, 3), round(kernel, 3), polls, round(listing, 3), round(self.forget(sid), 3))

    def rate(self, rnd: int, n: int, load: Load) -> Rate:
        sid = self.pair.create_service(name=f"bench-rate-{n}-{rnd}")
        self.pair.add_routes(sid, MATCHING_ROUTE, *non_matching_routes(n - 1))
        t = self.pair.t
        wait_until(lambda: measure(t.cl, t.s1_ip, PORT, Load(1, 3, 1, 0))["completed"] == 1, timeout=120,
                   interval=0.3, what=f"cl -> s1 carried with {n} routes")
        res = measure(t.cl, t.s1_ip, PORT, load)
        self.forget(sid)
        return Rate(rnd, n, res["rate_per_s"], res["ttfb_ms"]["p50"], res["ttfb_ms"]["p99"], res["completed"],
                    res["errors"])


def report(applies: list[Apply], rates: list[Rate], sizes: list[int], rate_sizes: list[int], poll: float) -> None:
    print(f"\napply time: POST of N routes -> all N in agent-a's `nft list table inet arctic` (median over rounds; "
          f"late by at most one poll ({poll:g} s) + one listing)")
    print(f"{'routes':>7} {'runs':>4} {'api s':>7} {'kernel s':>9} {'min':>7} {'max':>7} {'listing s':>10} "
          f"{'delete s':>9}")
    for n in sizes:
        mine = [a for a in applies if a.routes == n]
        if mine:
            print(f"{n:>7} {len(mine):>4} {statistics.median(a.api_s for a in mine):>7.3f} "
                  f"{statistics.median(a.kernel_s for a in mine):>9.3f} {min(a.kernel_s for a in mine):>7.3f} "
                  f"{max(a.kernel_s for a in mine):>7.3f} {max(a.listing_s for a in mine):>10.3f} "
                  f"{statistics.median(a.delete_s for a in mine):>9.3f}")
    biggest = [a for a in applies if a.routes == max(sizes)]
    if biggest and max(sizes) >= 10_000:
        median = statistics.median(a.kernel_s for a in biggest)
        print(f"{max(sizes)} routes in the kernel: {median:.2f} s; target < {APPLY_TARGET_S:g} s: "
              f"{'met' if median < APPLY_TARGET_S else 'MISSED'}")
    print("\nconnection rate through the service (median over rounds)")
    print(f"{'routes':>7} {'runs':>4} {'conn/s':>8} {'ttfb p50':>9} {'ttfb p99':>9} {'errors':>7}")
    for n in rate_sizes:
        mine = [r for r in rates if r.routes == n]
        if mine:
            p50, p99 = statistics.median(r.p50_ms for r in mine), statistics.median(r.p99_ms for r in mine)
            print(f"{n:>7} {len(mine):>4} {statistics.median(r.rate for r in mine):>8.0f} {p50:>7.2f}ms "
                  f"{p99:>7.2f}ms {sum(sum(r.errors.values()) for r in mine):>7}")
    small, big = min(rate_sizes), max(rate_sizes)
    by_round = {}
    for r in rates:
        by_round.setdefault(r.round, {})[r.routes] = r.rate
    per_round = [v[big] / v[small] for v in by_round.values() if small in v and big in v and v[small] > 0]
    if per_round and small != big:
        ratio = statistics.median(per_round)
        verdict = (f"target >= {RATE_TARGET}: {'met' if ratio >= RATE_TARGET else 'MISSED'}"
                   if (small, big) == (10, 10_000) else "information (the target is for 10,000 vs 10)")
        print(f"rate with {big} routes / rate with {small}: {ratio:.3f} (median of {len(per_round)} per-round "
              f"ratios)  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are taken over them)")
    parser.add_argument("--sizes", default="100,1000,10000", help="route counts for the apply time")
    parser.add_argument("--rate-sizes", default="10,10000", help="route counts for the connection rate")
    parser.add_argument("--count", type=int, default=2000, help="connections per rate measurement (at most)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per rate measurement (at most)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between nft listings")
    parser.add_argument("--encryption", choices=("tls", "none"), default="tls", help="tunnel mode of the agents")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 round, 10/100 routes, 100 connections")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.sizes, args.rate_sizes, args.count, args.seconds = 1, "100", "10,100", 100, 1.0
    sizes = [int(x) for x in args.sizes.split(",")]
    rate_sizes = [int(x) for x in args.rate_sizes.split(",")]
    if args.runs < 1 or any(not 1 <= n <= 20_000 for n in sizes + rate_sizes) or args.poll <= 0:
        parser.error("--runs >= 1, route counts 1..20000, --poll > 0")
    load = Load(args.count, args.seconds, args.concurrency, warmup=min(50, args.count // 10))
    applies: list[Apply] = []
    rates: list[Rate] = []
    started = time.monotonic()
    with Lab(prefix="arcbr") as lab:
        t = transit(lab)
        start_greeter(t.s1, t.s1_ip, PORT)
        with ArcticPair.start(t, encryption=args.encryption) as pair:
            bench = Bench(pair, args.poll)
            print(f"agents: tunnel.encryption {args.encryption}\n{'round':>5} {'what':5} {'routes':>7}  figures",
                  flush=True)
            for r in range(args.runs):
                for n in sizes:
                    a = bench.apply(r, n)
                    applies.append(a)
                    print(f"{r + 1:>5} {'apply':5} {n:>7}  api {a.api_s:.3f} s, kernel {a.kernel_s:.3f} s "
                          f"({a.polls} polls, listing <= {a.listing_s:.3f} s), delete {a.delete_s:.3f} s", flush=True)
                for n in rate_sizes:
                    m = bench.rate(r, n, load)
                    rates.append(m)
                    print(f"{r + 1:>5} {'rate':5} {n:>7}  {m.rate:.0f} conn/s, ttfb p50 {m.p50_ms:.2f} ms "
                          f"p99 {m.p99_ms:.2f} ms, {m.completed} done {m.errors or ''}", flush=True)
    if not any(m.completed for m in rates):
        print("no connection completed: the benchmark could not run", file=sys.stderr)
        return 1
    report(applies, rates, sizes, rate_sizes, args.poll)
    print(f"\nbench/routes took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"apply": [asdict(a) for a in applies], "rate": [asdict(m) for m in rates]},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
