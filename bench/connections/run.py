#!/usr/bin/env python3
"""Connection benchmark: new connections per second and time to first byte through an Arctic service.

    sudo .venv/bin/python bench/connections/run.py [--runs 5] [--count 3000] [--seconds 3] [--concurrency 16]
                                                   [--json FILE] [--quick]

One lab (``harness.transit``), one run, the same hosts and hops for every system:

* ``direct``: plain kernel routing (cl -> s2 192.168.200.2, a LAN no Arctic route covers);
* ``haproxy-plain`` / ``haproxy-tls``: the anchor, an HAProxy pair on agent-a and agent-b
  (``bench/throughput/haproxy_pair.py``), the client addressing agent-a's HAProxy;
* ``arctic-plain`` / ``arctic-tls``: two real agents, a service with the route 192.168.100.0/24; cl -> s1
  192.168.100.2 is intercepted on agent-a and carried through the tunnel (``tunnel.encryption: none`` / ``tls``).

``probe.py connect`` runs in the client's namespace as a process of its own and keeps ``--concurrency``
connections in flight, each timed from ``connect()`` to the first byte of the server's greeting (``probe.py
serve`` on the server). A measurement ends after ``--count`` connections or ``--seconds``, whichever comes first.
The agents run one tunnel mode at a time, so there are two phases; each measures its Arctic mode and, in the same
rounds, the anchors it is compared with. Printed: per system the medians (over rounds) of the rate and of TTFB
p50 / p99, and per ratio the median of per-round ratios. Target (issue 4): rate >= the HAProxy pair of the same
kind. Timing never fails the run; the exit status is non-zero only if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT / "agent")]

from compare import ARCTIC_ROUTE, ORDER, paired_median_ratio  # noqa: E402
from harness import Host, Lab, Transit, transit  # noqa: E402
from harness.arcticlab import ArcticPair, route_s2_directly, wait_until  # noqa: E402
from throughput.haproxy_pair import HaproxyPair, Relay  # noqa: E402

PROBE = HERE / "probe.py"
PORT = 9100
HA_PLAIN_FRONT, HA_PLAIN_PEER, HA_TLS_FRONT, HA_TLS_PEER = 7111, 7211, 7112, 7212
# The TLS phase measures the plain HAProxy pair too: Arctic's TLS mode is held to the *plain* pair (encryption
# should come for free once a session is up), and the TLS pair is shown for information.
PHASES = (("none", "arctic-plain", ("direct", "haproxy-plain")),
          ("tls", "arctic-tls", ("direct", "haproxy-plain", "haproxy-tls")))
RATIOS = (  # (numerator, denominator, target or None for information only)
    ("arctic-plain", "haproxy-plain", 1.0),
    ("arctic-tls", "haproxy-plain", 1.0),
    ("arctic-tls", "haproxy-tls", None),
    ("arctic-plain", "direct", None),
    ("arctic-tls", "direct", None),
)
TTFB_RATIOS = (  # time to first byte, p50: target <= the plain HAProxy pair's
    ("arctic-plain", "haproxy-plain", 1.0),
    ("arctic-tls", "haproxy-plain", 1.0),
)


@dataclass
class Measurement:
    phase: str
    round: int
    system: str
    completed: int
    errors: dict[str, int]
    rate: float
    p50_ms: float
    p99_ms: float


@dataclass
class Load:
    """How much one measurement asks of ``probe.py connect``."""

    count: int
    seconds: float
    concurrency: int
    warmup: int

    def argv(self, ip: str, port: int) -> list[str]:
        return [sys.executable, str(PROBE), "connect", "--ip", ip, "--port", str(port), "--count", str(self.count),
                "--seconds", str(self.seconds), "--concurrency", str(self.concurrency), "--warmup", str(self.warmup)]


def start_greeter(host: Host, ip: str, port: int, timeout: float = 10.0) -> subprocess.Popen:
    """``probe.py serve`` in ``host`` (ended by the lab), once it listens."""
    with open(host.lab.run_dir / f"greeter-{host.role}.log", "w") as log:
        proc = host.popen(sys.executable, str(PROBE), "serve", "--ip", ip, "--port", port, "--seconds", 1800,
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not host.run("ss", "-Hltn", f"sport = :{port}").stdout.strip():  # looks, sends nothing
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"probe server on {host} did not start: "
                               f"{(host.lab.run_dir / f'greeter-{host.role}.log').read_text()[-1000:]}")
        time.sleep(0.05)
    return proc


def measure(client: Host, ip: str, port: int, load: Load) -> dict:
    """One ``probe.py connect`` run from ``client``; its JSON result."""
    proc = client.run(*load.argv(ip, port), check=False, timeout=load.seconds + 60)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"probe failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}") from None


def carried(t: Transit) -> bool:
    """True once a connection cl -> s1 gets its greeting (through Arctic: nothing else routes it from cl)."""
    result = measure(t.cl, t.s1_ip, PORT, Load(count=1, seconds=3, concurrency=1, warmup=0))
    return result["completed"] == 1


def relays(t: Transit) -> list[Relay]:
    return [Relay("plain", (t.agent_a_lan_ip, HA_PLAIN_FRONT), (t.agent_b_ip, HA_PLAIN_PEER), (t.s1_ip, PORT),
                  tls=False),
            Relay("tls", (t.agent_a_lan_ip, HA_TLS_FRONT), (t.agent_b_ip, HA_TLS_PEER), (t.s1_ip, PORT), tls=True)]


def destination(t: Transit, system: str) -> tuple[str, int]:
    """Where the client connects for ``system`` (Arctic intercepts s1; HAProxy is addressed directly)."""
    return {"direct": (t.s2_ip, PORT), "haproxy-plain": (t.agent_a_lan_ip, HA_PLAIN_FRONT),
            "haproxy-tls": (t.agent_a_lan_ip, HA_TLS_FRONT)}.get(system, (t.s1_ip, PORT))


def summarise(samples: list[Measurement]) -> tuple[list[dict], list[dict]]:
    """Medians per system; per ratio the median of rate ratios paired by (phase, round)."""
    table = []
    for system in ORDER:
        mine = [m for m in samples if m.system == system]
        if mine:
            errors = sum(sum(m.errors.values()) for m in mine)
            table.append({"system": system, "runs": len(mine), "rate": statistics.median(m.rate for m in mine),
                          "rate_min": min(m.rate for m in mine), "rate_max": max(m.rate for m in mine),
                          "p50_ms": statistics.median(m.p50_ms for m in mine),
                          "p99_ms": statistics.median(m.p99_ms for m in mine),
                          "completed": sum(m.completed for m in mine), "errors": errors})
    ratios = []
    for num, den, target in RATIOS:
        paired = paired_median_ratio(samples, num, den, value=lambda m: m.rate)
        if paired:
            ratios.append({"ratio": f"{num} / {den}", "median": paired[0], "rounds": paired[1], "target": target})
    for num, den, target in TTFB_RATIOS:
        paired = paired_median_ratio(samples, num, den, value=lambda m: m.p50_ms)
        if paired:
            ratios.append({"ratio": f"ttfb p50 {num} / {den}", "median": paired[0], "rounds": paired[1],
                           "target": target, "at_most": True})
    return table, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds per phase (medians are taken over them)")
    parser.add_argument("--count", type=int, default=3000, help="connections per measurement (at most)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (at most)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in flight")
    parser.add_argument("--haproxy-no-tls-reuse", action="store_true",
                        help="HAProxy without TLS session resumption (a full handshake per connection, like Arctic)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 round of 200 connections, 1 s")
    parser.add_argument("--json", type=Path, help="also write every measurement and summary here")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.count, args.seconds = 1, 200, 1.0
    if args.runs < 1 or args.count < 1 or args.seconds <= 0 or not 1 <= args.concurrency <= 1000:
        parser.error("--runs, --count >= 1, --seconds > 0, --concurrency 1..1000")
    load = Load(args.count, args.seconds, args.concurrency, warmup=min(50, args.count // 10))
    samples: list[Measurement] = []
    started = time.monotonic()
    with Lab(prefix="arcbc") as lab:
        t = transit(lab)
        route_s2_directly(t)  # `direct` goes to s2; s1 stays reachable only through Arctic
        for host, ip in ((t.s1, t.s1_ip), (t.s2, t.s2_ip)):
            start_greeter(host, ip, PORT)
        haproxy = HaproxyPair(t, relays(t), tls_reuse=not args.haproxy_no_tls_reuse).start()
        with ArcticPair.start(t, encryption=PHASES[0][0]) as pair:
            sid = pair.create_service(name="bench-connections")
            pair.add_routes(sid, {"dest_cidr": ARCTIC_ROUTE, "priority": 100})
            print(f"{'phase':6} {'round':>5} {'system':14} {'conn/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'done':>6} "
                  "errors", flush=True)
            for mode, arctic, anchors in PHASES:
                pair.set_encryption(mode)
                wait_until(lambda: carried(t), timeout=30, interval=0.3,
                           what=f"cl -> s1 carried by Arctic ({mode})")
                for r in range(args.runs):
                    for system in (*anchors, arctic):
                        res = measure(t.cl, *destination(t, system), load)
                        m = Measurement(mode, r, system, res["completed"], res["errors"], res["rate_per_s"],
                                        res["ttfb_ms"]["p50"], res["ttfb_ms"]["p99"])
                        samples.append(m)
                        print(f"{mode:6} {r + 1:>5} {system:14} {m.rate:>8.0f} {m.p50_ms:>7.2f} {m.p99_ms:>7.2f} "
                              f"{m.completed:>6} {m.errors or ''}", flush=True)
                time.sleep(1.2)  # the stats file is rewritten every second
                probed = sum(m.completed for m in samples if m.system == arctic)
                print(f"{'':6} check: agent-a's data plane relayed {pair.carried_by(sid)} connections of the "
                      f"service in {mode} mode (the probe completed {probed}, plus warm-up and readiness checks)",
                      flush=True)
        haproxy.stop()
    if not any(m.completed for m in samples):
        print("no connection completed: the benchmark could not run", file=sys.stderr)
        return 1
    table, ratios = summarise(samples)
    print(f"\nmedians over {args.runs} round(s) per phase; each measurement: up to {args.count} connections or "
          f"{args.seconds:g} s, {args.concurrency} in flight (all processes share the machine's CPUs)")
    print(f"{'system':14} {'runs':>4} {'conn/s':>8} {'min':>7} {'max':>7} {'ttfb p50':>9} {'ttfb p99':>9} "
          f"{'errors':>7}")
    for row in table:
        print(f"{row['system']:14} {row['runs']:>4} {row['rate']:>8.0f} {row['rate_min']:>7.0f} "
              f"{row['rate_max']:>7.0f} {row['p50_ms']:>7.2f}ms {row['p99_ms']:>7.2f}ms {row['errors']:>7}")
    print("\nratios (median of per-round ratios, each against the anchor measured in the same round)")
    for row in ratios:
        target = row["target"]
        if target is None:
            verdict = "information"
        elif row.get("at_most"):
            verdict = f"target <= {target:.1f}: {'met' if row['median'] <= target else 'MISSED'}"
        else:
            verdict = f"target >= {target:.1f}: {'met' if row['median'] >= target else 'MISSED'}"
        print(f"{row['ratio']:44} {row['median']:>6.3f}  {verdict}")
    print(f"\nbench/connections took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"samples": [asdict(m) for m in samples], "table": table,
                                         "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
