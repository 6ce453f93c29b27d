"""The benchmarks still run: each one, in its ``--quick`` mode (bench/kcp: one cell), produces every figure it promises.

Only the presence of figures is checked, never their size: timing on this machine is too noisy to be a test
(benchmarks report, they do not fail). Each benchmark builds and tears down its own lab with two real agents, so
this also proves the shared set-up (``harness.arcticlab``) and the HAProxy anchor still work. The four together
take about a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_quick(name: str, tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / name / "run.py"), *(args or ("--quick",)), "--json", str(out)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"bench/{name} could not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout, json.loads(out.read_text())


def test_throughput_bench_measures_every_system_and_prints_the_target_ratios(tmp_path):
    stdout, result = run_quick("throughput", tmp_path)
    systems = {row["system"] for row in result["table"]}
    assert systems == {"direct", "haproxy-plain", "haproxy-tls", "arctic-plain", "arctic-tls"}
    assert all(row["median_gbps"] > 0 for row in result["table"]), result["table"]
    ratios = {row["ratio"] for row in result["ratios"] if row["target"] is not None}
    assert ratios == {"arctic-plain / direct", "arctic-tls / haproxy-tls"}  # the quick run has 1 flow only
    assert "target >= 0.8" in stdout and "target >= 1.0" in stdout


def test_connections_bench_measures_rate_and_time_to_first_byte_through_every_system(tmp_path):
    stdout, result = run_quick("connections", tmp_path)
    rows = {row["system"]: row for row in result["table"]}
    assert set(rows) == {"direct", "haproxy-plain", "haproxy-tls", "arctic-plain", "arctic-tls"}
    for system, row in rows.items():
        assert row["completed"] > 0 and row["rate"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], (
            system, row)
    assert {r["ratio"] for r in result["ratios"] if r["target"]} == {
        "arctic-plain / haproxy-plain", "arctic-tls / haproxy-plain",  # encryption for free: TLS vs the plain pair
        "ttfb p50 arctic-plain / haproxy-plain", "ttfb p50 arctic-tls / haproxy-plain"}
    assert "check: agent-a's data plane relayed" in stdout  # the Arctic rows really went through Arctic


def test_routes_bench_times_the_kernel_apply_and_compares_connection_rates(tmp_path):
    stdout, result = run_quick("routes", tmp_path)
    assert result["apply"] and all(a["kernel_s"] > 0 and a["api_s"] > 0 for a in result["apply"])
    assert {m["routes"] for m in result["rate"]} == {10, 100}
    assert all(m["completed"] > 0 and m["rate"] > 0 for m in result["rate"])
    assert "rate with 100 routes / rate with 10" in stdout


def test_kcp_bench_measures_every_system_across_the_emulated_wan(tmp_path):
    stdout, samples = run_quick("kcp", tmp_path, "--rtts", "20", "--losses", "0", "--flows", "1", "--seconds", "1",
                                "--omit", "0", "--latency-seconds", "1")
    rows = {s["system"]: s for s in samples}
    assert set(rows) == {"arctic-kcp", "arctic-tcp", "kcptun", "tcp-cubic", "tcp-bbr"}
    for system, row in rows.items():
        assert row["error"] is None and row["mbps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0, (system, row)
    assert "arctic-kcp / kcptun" in stdout and "target >= 0.8" in stdout
    assert "check: agent-a's data plane carried" in stdout and "carried 0 " not in stdout  # KCP went through Arctic
