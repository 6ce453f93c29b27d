#!/usr/bin/env python3
"""Convergence benchmark: how long from a write on one agent until every agent holds the same state?

    sudo .venv/bin/python bench/convergence/run.py [--agents 10] [--cycles 10] [--interval 1.0] [--json FILE]

``--agents`` real agents (``arctic-agent run``, ``apply_kernel: false``) in lab namespaces on one segment, joined
in a chain (1->2, 2->3, ...) so that most members meet through transitive discovery. ``probe.py`` then runs in
the controller namespace and makes ``4 x --cycles`` writes spread over the agents (create, a forwarded route
add, update, a forwarded delete), timing each until ``GET /v1/cluster/status`` reports one registry hash on
every agent. Printed: p50 / p95 / max write->converged time (target: p95 < 1 s), and the gossip traffic:
application bytes per anti-entropy round while idle and per write (counters in ``cluster status``).
Exit status 1 when the target is missed or a write never converged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "lab"), str(ROOT / "agent"), str(ROOT / "bench")]

from agentkit import Issuer  # noqa: E402
from clusterkit import ClusterLab  # noqa: E402
from harness import Lab  # noqa: E402
from probekit import percentile  # noqa: E402

TARGET_P95_S = 1.0


def gossip_totals(cl: ClusterLab) -> dict[str, int]:
    totals: dict[str, int] = {}
    for m in cl.members:
        for key, value in cl.status(m).get("gossip", {}).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def run(agents: int, cycles: int, interval: float, idle: float) -> dict:
    with Lab(prefix="arcb") as lab:
        t0 = time.monotonic()
        cl = ClusterLab(lab, agents, Issuer.generate(), sync_interval=interval)
        started = time.monotonic() - t0
        t0 = time.monotonic()
        cl.form_cluster()
        formed = time.monotonic() - t0
        quiet = cl.wait_converged(timeout=30)
        before_idle = gossip_totals(cl)
        t0 = time.monotonic()
        time.sleep(idle)
        idle_delta, idle_seconds = delta(gossip_totals(cl), before_idle), time.monotonic() - t0
        plan = {"agents": [{"url": m.url, "peer_id": m.peer_id, "auth": cl.headers(m)} for m in cl.members],
                "cycles": cycles, "timeout": 15.0, "poll": 0.05}
        before_writes = gossip_totals(cl)
        t0 = time.monotonic()
        proc = subprocess.run(cl.ctl.command(sys.executable, str(HERE / "probe.py")), input=json.dumps(plan),
                              capture_output=True, text=True, timeout=60 + cycles * 4 * 20, check=False)
        write_seconds = time.monotonic() - t0
        write_delta = delta(gossip_totals(cl), before_writes)
        if proc.returncode != 0:
            raise SystemExit(f"probe failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        writes = json.loads(proc.stdout)
    assert quiet
    idle_bytes = idle_delta["bytes_sent"] + idle_delta["bytes_received"]
    write_bytes = write_delta["bytes_sent"] + write_delta["bytes_received"]
    background = idle_bytes / idle_seconds * write_seconds
    return {
        "agents": agents, "interval_s": interval, "start_s": started, "form_cluster_s": formed,
        "writes": writes,
        "idle": {"seconds": idle_seconds, **idle_delta,
                 "bytes_per_round": idle_bytes / max(1, idle_delta["rounds"]),
                 "messages_per_round": idle_delta["messages"] / max(1, idle_delta["rounds"])},
        "write_phase": {"seconds": write_seconds, **write_delta,
                        "bytes_per_write": write_bytes / len(writes),
                        "extra_bytes_per_write": max(0.0, write_bytes - background) / len(writes)},
    }


def report(result: dict) -> bool:
    writes = result["writes"]
    done = [w["converged_s"] for w in writes if w["converged_s"] is not None]
    lost = len(writes) - len(done)
    print(f"\nconvergence: {result['agents']} agents, sync_interval {result['interval_s']} s, "
          f"{len(writes)} writes (agents started in {result['start_s']:.1f} s, cluster formed through "
          f"chained joins + transitive discovery in {result['form_cluster_s']:.1f} s)\n")
    print(f"{'write':<24}{'n':>4}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'ack p50 ms':>12}")
    ops = sorted({w["op"] for w in writes}, key=lambda op: [w["op"] for w in writes].index(op))
    for label, rows in [(op, [w for w in writes if w["op"] == op]) for op in ops] + [("all", writes)]:
        times = [w["converged_s"] for w in rows if w["converged_s"] is not None]
        if not times:
            print(f"{label:<24}{len(rows):>4}{'never':>9}")
            continue
        acks = [w["ack_s"] for w in rows]
        print(f"{label:<24}{len(rows):>4}{percentile(times, 50) * 1000:>9.0f}{percentile(times, 95) * 1000:>9.0f}"
              f"{max(times) * 1000:>9.0f}{percentile(acks, 50) * 1000:>12.0f}")
    idle, wp = result["idle"], result["write_phase"]
    print(f"\ngossip while idle ({idle['seconds']:.1f} s): {idle['rounds']} anti-entropy rounds, "
          f"{idle['bytes_per_round']:.0f} bytes and {idle['messages_per_round']:.1f} messages per round "
          f"(one agent x {result['agents'] - 1} peers, registry hashes equal)")
    print(f"gossip during writes ({wp['seconds']:.1f} s): {wp['pushes']} pushes, {wp['bytes_per_write']:.0f} bytes "
          f"per write all in, ~{wp['extra_bytes_per_write']:.0f} bytes per write above the idle background")
    p95 = percentile(done, 95) if done else float("inf")
    ok = lost == 0 and p95 < TARGET_P95_S
    print(f"\ntarget p95 < {TARGET_P95_S:.0f} s: p95 = {p95 * 1000:.0f} ms"
          f"{f', {lost} writes never converged' if lost else ''} -> {'MET' if ok else 'MISSED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=10, help="4 writes per cycle")
    parser.add_argument("--interval", type=float, default=1.0, help="agents' sync_interval (anti-entropy period)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle gossip to measure")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if not 2 <= args.agents <= 50:
        parser.error("--agents must be between 2 and 50")
    result = run(args.agents, args.cycles, args.interval, args.idle)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.exit(0 if report(result) else 1)


if __name__ == "__main__":
    main()
