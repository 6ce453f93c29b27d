#!/usr/bin/env python3
"""Throughput benchmark: iperf3 through Arctic (plaintext and TLS tunnels) against direct routing and HAProxy.

    sudo .venv/bin/python bench/throughput/run.py [--runs 3] [--seconds 5] [--flows 1,8] [--json FILE] [--quick]

One lab (``harness.transit``: client cl 10.0.0.2 -> agent-a -> agent-b -> servers), one run, every system on the
same hosts and hops:

* ``direct``: plain kernel routing, no relay (cl -> s2 192.168.200.2, a LAN no Arctic route covers);
* ``haproxy-plain`` / ``haproxy-tls``: the anchor, an HAProxy pair on agent-a and agent-b (``haproxy_pair.py``);
* ``arctic-plain`` / ``arctic-tls``: two real agents, a service with the route 192.168.100.0/24, cl -> s1
  192.168.100.2 intercepted on agent-a and carried through the tunnel (``tunnel.encryption: none`` / ``tls``).

The agents run one tunnel mode at a time (both ends must agree), so the run has two phases. Each phase measures
its Arctic mode and, in the same rounds, the anchors it is compared with (``direct`` and the HAProxy pair of the
same kind), so every ratio is taken between figures measured minutes apart, on the same noisy machine. Printed:
median Gbit/s per system and flow count, and per ratio the median of the per-round ratios. Targets (issue 4):
plaintext >= 0.8 x direct; TLS >= 1.0 x the HAProxy TLS pair. Timing never fails the run; the exit status is
non-zero only if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench"), str(ROOT / "agent")]

from compare import ARCTIC_ROUTE, ORDER, PHASES, paired_median_ratio  # noqa: E402
from harness import Lab, Transit, tcp_connect, transit  # noqa: E402
from harness.arcticlab import ArcticPair, route_s2_directly, wait_until  # noqa: E402
from throughput.haproxy_pair import HaproxyPair, Relay  # noqa: E402

IPERF_PORT = 5201
HA_PLAIN_FRONT, HA_PLAIN_PEER, HA_TLS_FRONT, HA_TLS_PEER = 7101, 7201, 7102, 7202
RATIOS = (  # (numerator, denominator, {flow count: target}); flow counts without a target are information only
    ("arctic-plain", "direct", {1: 0.8}),
    ("arctic-tls", "haproxy-tls", {1: 1.0, 8: 1.0}),
    ("arctic-plain", "haproxy-plain", {8: 1.5}),
    ("arctic-tls", "direct", {}),
)


@dataclass
class Sample:
    phase: str
    round: int
    system: str
    flows: int
    gbps: float
    retransmits: int


class Bench:
    def __init__(self, t: Transit, seconds: float) -> None:
        self.t, self.seconds = t, seconds
        for host, ip in ((t.s1, t.s1_ip), (t.s2, t.s2_ip)):
            with open(t.lab.run_dir / f"iperf3-{host.role}.log", "w") as log:
                host.popen("iperf3", "-s", "-B", ip, "-p", IPERF_PORT, stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
        self.haproxy = HaproxyPair(t, [
            Relay("plain", (t.agent_a_lan_ip, HA_PLAIN_FRONT), (t.agent_b_ip, HA_PLAIN_PEER),
                  (t.s1_ip, IPERF_PORT), tls=False),
            Relay("tls", (t.agent_a_lan_ip, HA_TLS_FRONT), (t.agent_b_ip, HA_TLS_PEER),
                  (t.s1_ip, IPERF_PORT), tls=True),
        ])

    def destination(self, system: str) -> tuple[str, int]:
        """Where the client connects for ``system`` (Arctic intercepts s1; HAProxy is addressed directly)."""
        return {"direct": (self.t.s2_ip, IPERF_PORT),
                "haproxy-plain": (self.t.agent_a_lan_ip, HA_PLAIN_FRONT),
                "haproxy-tls": (self.t.agent_a_lan_ip, HA_TLS_FRONT)}.get(system, (self.t.s1_ip, IPERF_PORT))

    def iperf(self, phase: str, rnd: int, system: str, flows: int) -> Sample:
        ip, port = self.destination(system)
        argv = ["iperf3", "-c", ip, "-p", port, "-t", self.seconds, "-P", flows, "-J"]
        for attempt in range(3):  # iperf3's server serves one test at a time; a refused start is retried
            proc = self.t.cl.run(*argv, check=False, timeout=self.seconds + 30)
            try:
                end = json.loads(proc.stdout)["end"]
                gbps = end["sum_received"]["bits_per_second"] / 1e9
                return Sample(phase, rnd, system, flows, round(gbps, 3),
                              int(end["sum_sent"].get("retransmits", 0)))
            except (ValueError, KeyError):
                if attempt == 2:
                    detail = (proc.stdout or proc.stderr).strip()[-400:]
                    raise RuntimeError(f"iperf3 for {system} ({flows} flows) failed: {detail}") from None
                time.sleep(1)
        raise AssertionError("unreachable")


def carried(t: Transit) -> bool:
    """True once cl -> s1:5201 is accepted (through Arctic: nothing else routes 192.168.100.0/24 from cl)."""
    return tcp_connect(t.cl, t.s1_ip, IPERF_PORT, timeout=2)


def summarise(samples: list[Sample], flow_counts: list[int]) -> tuple[list[dict], list[dict]]:
    """Medians per (system, flows), and per ratio the median of ratios paired by (phase, round, flows)."""
    table = []
    for system in ORDER:
        for n in flow_counts:
            mine = [s for s in samples if s.system == system and s.flows == n]
            if mine:
                vals = [s.gbps for s in mine]
                table.append({"system": system, "flows": n, "runs": len(vals), "median_gbps": statistics.median(vals),
                              "min_gbps": min(vals), "max_gbps": max(vals),
                              "retransmits_median": statistics.median(s.retransmits for s in mine)})
    ratios = []
    for num, den, targets in RATIOS:
        for n in flow_counts:
            paired = paired_median_ratio(samples, num, den, value=lambda s: s.gbps, where=lambda s, n=n: s.flows == n)
            if paired:
                ratios.append({"ratio": f"{num} / {den}", "flows": n, "median": paired[0], "rounds": paired[1],
                               "target": targets.get(n)})
    return table, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per phase (medians are taken over them)")
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 -t")
    parser.add_argument("--flows", default="1,8", help="comma-separated iperf3 -P values")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 round, 1 s, 1 flow")
    parser.add_argument("--json", type=Path, help="also write every sample and summary here")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.flows = 1, 1.0, "1"
    flow_counts = [int(x) for x in args.flows.split(",")]
    if args.runs < 1 or args.seconds <= 0 or any(n < 1 or n > 128 for n in flow_counts):
        parser.error("--runs >= 1, --seconds > 0 and flows between 1 and 128")
    samples: list[Sample] = []
    started = time.monotonic()
    with Lab(prefix="arcbt") as lab:
        t = transit(lab)
        route_s2_directly(t)  # `direct` goes to s2; s1 stays reachable only through Arctic
        bench = Bench(t, args.seconds)
        bench.haproxy.start()
        with ArcticPair.start(t, encryption=PHASES[0][0]) as pair:
            sid = pair.create_service(name="bench-throughput")
            pair.add_routes(sid, {"dest_cidr": ARCTIC_ROUTE, "priority": 100})
            print(f"{'phase':6} {'round':>5} {'system':14} {'flows':>5} {'Gbit/s':>7} {'retr':>6}", flush=True)
            for mode, arctic, anchors in PHASES:
                pair.set_encryption(mode)
                wait_until(lambda: carried(t), timeout=30, what=f"cl -> s1 carried by Arctic ({mode})")
                for r in range(args.runs):
                    for n in flow_counts:
                        for system in (*anchors, arctic):
                            s = bench.iperf(mode, r, system, n)
                            samples.append(s)
                            print(f"{mode:6} {r + 1:>5} {system:14} {n:>5} {s.gbps:>7.2f} {s.retransmits:>6}",
                                  flush=True)
                time.sleep(1.2)  # the stats file is rewritten every second
                print(f"{'':6} check: agent-a's data plane relayed {pair.carried_by(sid)} connections of the service "
                      f"in {mode} mode (iperf3 opens 1 + flows per test)", flush=True)
            bench.haproxy.stop()
    table, ratios = summarise(samples, flow_counts)
    print(f"\nmedians over {args.runs} round(s) per phase, iperf3 -t {args.seconds:g} (all processes share "
          f"{os.cpu_count()} CPUs; runs vary by about +-25 %)")
    print(f"{'system':14} {'flows':>5} {'runs':>4} {'Gbit/s':>7} {'min':>6} {'max':>6} {'retr':>7}")
    for row in table:
        print(f"{row['system']:14} {row['flows']:>5} {row['runs']:>4} {row['median_gbps']:>7.2f} "
              f"{row['min_gbps']:>6.2f} {row['max_gbps']:>6.2f} {row['retransmits_median']:>7.0f}")
    print("\nratios (median of per-round ratios, each against the anchor measured in the same round)")
    for row in ratios:
        target = row["target"]
        verdict = ("information" if target is None
                   else f"target >= {target:.1f}: {'met' if row['median'] >= target else 'MISSED'}")
        print(f"{row['ratio']:30} {row['flows']:>2} flow{'s' if row['flows'] > 1 else ' '} {row['median']:>6.3f}  "
              f"{verdict}")
    print(f"\nbench/throughput took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"samples": [asdict(s) for s in samples], "table": table,
                                         "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
