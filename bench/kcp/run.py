#!/usr/bin/env python3
"""KCP benchmark: goodput and small-message latency across an emulated WAN, Arctic KCP against its anchors.

    sudo .venv/bin/python bench/kcp/run.py                 # RTT {20,100,250} ms x loss {0,1,5,10} %: ~30 min
    sudo .venv/bin/python bench/kcp/run.py --quick         # RTT {20,100} x loss {0,5}, shorter runs: ~4 min
    sudo .venv/bin/python bench/kcp/run.py --fec-study     # also Arctic KCP with FEC auto / on / off

One lab (``harness.wan_transit``): client ``cl`` -> agent-a == emulated WAN == agent-b -> server ``s1``. The WAN
emulator (``harness.wan``) holds every packet half the RTT each way and drops the given share of packets in each
direction. Systems, all measured in the same cell, one after the other:

* ``arctic-kcp``: two real agents, a service with ``--transport kcp`` (route 192.168.100.4/32);
* ``arctic-tcp``: the same agents, a TCP service (route 192.168.100.2/32; tunnel sockets use BBR);
* ``kcptun``: the anchor, Debian's kcptun client on agent-a and server on agent-b, ``--mode fast3``, default FEC
  (10 data + 3 parity), the same windows as Arctic's (``--sndwnd/--rcvwnd``), ``--nocomp`` (the payload is
  random: compressing it would only cost CPU);
* ``tcp-cubic`` / ``tcp-bbr``: plain routed TCP to 192.168.100.3, what a user has without Arctic, the congestion
  control chosen per socket (``iperf3 -C``, TCP_CONGESTION in the latency probe: a namespace may not change the
  default).

Per system and cell: round-trip latency of 64-byte request/response messages on 4 connections (``probe.py``),
p50 and p99, measured first, on an idle path; then goodput of 1 and 8 flows (iperf3, receiver figures, ramp-up
omitted; one iperf3 server per system). Targets (issue 11): at >= 5 %
loss and >= 100 ms RTT, Arctic KCP goodput >= 2x Arctic TCP, >= 1.0x kcptun, >= 10x plain cubic, and its p99
<= 0.5x Arctic TCP's; at 0 % loss and 20 ms, Arctic KCP >= 0.8x kcptun. Timing never fails the run; the exit
status is non-zero only if the benchmark could not run. ``--json FILE`` writes every sample.
"""

from __future__ import annotations

import argparse
import contextlib
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

from harness import Host, Lab, wan_transit  # noqa: E402
from harness.arcticlab import ArcticPair, wait_until  # noqa: E402

PROBE = HERE / "probe.py"
ECHO_PORT, ECHO_CUBIC, ECHO_BBR = 9400, 9401, 9402
SYSTEMS = ("arctic-kcp", "arctic-tcp", "kcptun", "tcp-cubic", "tcp-bbr")
IPERF_PORTS = dict(zip(SYSTEMS, range(5201, 5206), strict=True))  # one iperf3 server per system: never "busy"
ARCTIC_TCP_IP, PLAIN_IP, ARCTIC_KCP_IP = "192.168.100.2", "192.168.100.3", "192.168.100.4"
KCPTUN_IPERF, KCPTUN_ECHO = 12948, 12949  # kcptun client ports on agent-a's LAN address
KCPTUN_UDP_IPERF, KCPTUN_UDP_ECHO = 29900, 29901
KCPTUN_KEY = "arctic-bench"


@dataclass
class Sample:
    rtt_ms: int
    loss_pct: float
    system: str
    flows: int
    mbps: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    round_trips: int = 0
    error: str | None = None
    fec: str = ""


@dataclass(frozen=True)
class Target:
    """Where a system's traffic goes: iperf3 destination, echo destination, congestion control (plain rows)."""

    iperf: tuple[str, int]
    echo: tuple[str, int]
    cc: str | None = None


def targets(t) -> dict[str, Target]:
    return {
        "arctic-kcp": Target((ARCTIC_KCP_IP, IPERF_PORTS["arctic-kcp"]), (ARCTIC_KCP_IP, ECHO_PORT)),
        "arctic-tcp": Target((ARCTIC_TCP_IP, IPERF_PORTS["arctic-tcp"]), (ARCTIC_TCP_IP, ECHO_PORT)),
        "kcptun": Target((t.agent_a_lan_ip, KCPTUN_IPERF), (t.agent_a_lan_ip, KCPTUN_ECHO)),
        "tcp-cubic": Target((PLAIN_IP, IPERF_PORTS["tcp-cubic"]), (PLAIN_IP, ECHO_CUBIC), "cubic"),
        "tcp-bbr": Target((PLAIN_IP, IPERF_PORTS["tcp-bbr"]), (PLAIN_IP, ECHO_BBR), "bbr"),
    }


# --- the lab ---------------------------------------------------------------------------------------------------

def start_servers(t) -> None:
    """An iperf3 server per system and three echo servers on s1 (all addresses), ended with the lab."""
    for port in IPERF_PORTS.values():
        t.s1.popen("iperf3", "-s", "-p", port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port, cc in ((ECHO_PORT, None), (ECHO_CUBIC, "cubic"), (ECHO_BBR, "bbr")):
        t.s1.popen(sys.executable, PROBE, "serve", "--ip", "0.0.0.0", "--port", port, "--seconds", 7200,
                   *(["--cc", cc] if cc else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in (*IPERF_PORTS.values(), ECHO_PORT, ECHO_CUBIC, ECHO_BBR):
        wait_until(lambda port=port: t.s1.run("ss", "-Hltn", f"sport = :{port}").stdout.strip(),
                   what=f"a server on s1:{port}")


def start_kcptun(t, window: int) -> None:
    """A kcptun pair per target (iperf3, echo): client on agent-a's LAN address, server on agent-b."""
    common = ["--mode", "fast3", "--sndwnd", str(window), "--rcvwnd", str(window), "--nocomp", "--key", KCPTUN_KEY,
              "--quiet"]
    pairs = ((KCPTUN_UDP_IPERF, KCPTUN_IPERF, IPERF_PORTS["kcptun"]), (KCPTUN_UDP_ECHO, KCPTUN_ECHO, ECHO_PORT))
    for udp, tcp, target in pairs:
        t.agent_b.popen("kcptun-server", "-t", f"{PLAIN_IP}:{target}", "-l", f"{t.agent_b_ip}:{udp}", *common,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t.agent_a.popen("kcptun-client", "-r", f"{t.agent_b_ip}:{udp}", "-l", f"{t.agent_a_lan_ip}:{tcp}",
                        *common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda tcp=tcp: t.agent_a.run("ss", "-Hltn", f"sport = :{tcp}").stdout.strip(),
                   what=f"kcptun client on {tcp}")


def route_plain(t) -> None:
    """Plain routing between the client LAN and 192.168.100.3 only (the Arctic rows' addresses are intercepted
    by their services' routes, so each system's traffic takes its own path)."""
    t.s1.addr("eth-net100", f"{PLAIN_IP}/24", f"{ARCTIC_KCP_IP}/24")
    t.agent_a.route(f"{PLAIN_IP}/32", via=t.agent_b_ip)
    t.agent_b.route("10.0.0.0/8", via=t.agent_a_ip)


def greeted(t, ip: str, port: int) -> bool:
    out = t.cl.run(sys.executable, PROBE, "ping", "--ip", ip, "--port", port, "--seconds", 0.5, "--conns", 1,
                   check=False, timeout=30)
    try:
        return json.loads(out.stdout)["round_trips"] > 0
    except ValueError:
        return False


# --- measuring -------------------------------------------------------------------------------------------------

def server_idle(t, system: str) -> None:
    """Wait (bounded) until the previous run's connections to this system's iperf3 server are gone: on a lossy
    path a test's end can take a while to reach the server, which refuses a new test until then (iperf3 then says
    so, in the table)."""
    port = IPERF_PORTS[system]
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not t.s1.run("ss", "-Htn", "state", "established", f"( sport = :{port} )").stdout.strip(),
                   timeout=30, interval=0.2, what=f"the iperf3 server on {port} to be idle")


def goodput(client: Host, target: Target, flows: int, seconds: int, omit: int) -> tuple[float | None, str | None]:
    argv = ["iperf3", "-c", target.iperf[0], "-p", str(target.iperf[1]), "-t", str(seconds), "-O", str(omit),
            "-P", str(flows), "-J", *(["-C", target.cc] if target.cc else [])]
    proc = client.run(*argv, check=False, timeout=seconds + omit + 90)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return None, f"iperf3 exited {proc.returncode}: {proc.stderr.strip()[-200:]}"
    if doc.get("error"):
        return None, doc["error"]
    return doc["end"]["sum_received"]["bits_per_second"] / 1e6, None


def latency(client: Host, target: Target, seconds: float) -> dict:
    argv = [sys.executable, str(PROBE), "ping", "--ip", target.echo[0], "--port", str(target.echo[1]),
            "--seconds", str(seconds), "--conns", "4", *(["--cc", target.cc] if target.cc else [])]
    proc = client.run(*argv, check=False, timeout=seconds + 120)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"round_trips": 0, "errors": {"probe": proc.returncode}, "ms": {}}


def new_path(t, rtt: int, loss: float) -> dict:
    """Set the emulated WAN for a cell, and give Arctic's TCP sessions a fresh start on it.

    The sessions are long-lived, and BBR keeps the smallest RTT it saw for 10 s: a session opened at 0.2 ms would
    pace the first seconds of a 20 ms path at a tiny window. A real path does not jump like that between
    measurements, so each cell cuts the TCP sessions (``ss -K``); they are back within milliseconds. KCP measures
    its RTT from every acknowledgement and needs nothing. Returns the emulator's counters before the cell.
    """
    t.wan.set(delay_ms=rtt / 2, loss=loss / 100)
    t.agent_a.run("ss", "-K", "-t", "dst", t.agent_b_ip, "dport", "=", ":61000", check=False)  # TCP only
    wait_until(lambda: greeted(t, *targets(t)["arctic-tcp"].echo), timeout=60, what="Arctic TCP after the cut")
    return t.wan.stats()


def measure_cell(t, systems: list[str], rtt: int, loss: float, args, fec: str = "") -> list[Sample]:
    """Latency of every system first, on an idle path (bulk data still queued in a session from a goodput run
    would sit in front of the small messages), then the goodput runs."""
    before = new_path(t, rtt, loss)
    latencies = {system: latency(t.cl, targets(t)[system], args.latency_seconds) for system in systems
                 if args.latency_seconds > 0}
    out = []
    for system in systems:
        target = targets(t)[system]
        for flows in args.flows:
            server_idle(t, system)
            mbps, error = goodput(t.cl, target, flows, args.seconds, args.omit)
            sample = Sample(rtt, loss, system, flows, mbps, error=error, fec=fec)
            if flows == args.flows[0] and system in latencies:
                lat = latencies[system]
                sample.p50_ms, sample.p99_ms = lat["ms"].get("p50"), lat["ms"].get("p99")
                sample.round_trips = lat["round_trips"]
            out.append(sample)
            print(f"{rtt:>4} {loss:>5g} {system + (' ' + fec if fec else ''):16} {flows:>2} "
                  f"{'-' if mbps is None else f'{mbps:9.1f}':>9} "
                  f"{'' if sample.p50_ms is None else f'{sample.p50_ms:8.1f} {sample.p99_ms:8.1f}'} "
                  f"{error or ''}", flush=True)
    after = t.wan.stats()
    overflow = {d: after[d].get("tun_dropped", 0) - before[d].get("tun_dropped", 0) for d in after}
    if any(overflow.values()):
        print(f"     note: the emulator could not keep up in this cell: {overflow} packets dropped in front of it "
              "(the fastest rows measured the emulator, not the path)", flush=True)
    return out


# --- reporting -------------------------------------------------------------------------------------------------

def ratio(samples: list[Sample], num: str, den: str, rtt: int, loss: float, flows: int, field: str = "mbps"):
    def value(system: str) -> float | None:
        found = [getattr(s, field) for s in samples if s.system == system and s.rtt_ms == rtt and s.loss_pct == loss
                 and s.flows == flows and not s.fec and getattr(s, field) is not None]
        return statistics.median(found) if found else None

    a, b = value(num), value(den)
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(samples: list[Sample], args) -> None:
    cells = sorted({(s.rtt_ms, s.loss_pct) for s in samples if not s.fec})
    print("\ngoodput, Mbit/s (1 flow / 8 flows); small-message RTT p50 / p99, ms")
    print(f"{'RTT':>4} {'loss':>5} " + " ".join(f"{name:>24}" for name in SYSTEMS))
    for rtt, loss in cells:
        row = []
        for system in SYSTEMS:
            mine = {s.flows: s for s in samples if s.system == system and (s.rtt_ms, s.loss_pct) == (rtt, loss)
                    and not s.fec}
            if not mine:
                row.append(f"{'-':>24}")
                continue
            flows = "/".join("-" if mine.get(n) is None or mine[n].mbps is None else f"{mine[n].mbps:.1f}"
                             for n in args.flows)
            first = mine.get(args.flows[0])
            lat = f" {first.p50_ms:.0f}/{first.p99_ms:.0f}" if first and first.p50_ms is not None else ""
            row.append(f"{flows + lat:>24}")
        print(f"{rtt:>4} {loss:>5g} " + " ".join(row))
    print("\nratios and targets (Arctic KCP against ..., same cell, 1 flow unless said)")
    for rtt, loss in cells:
        checks = []
        if loss >= 5 and rtt >= 100:
            checks += [("arctic-tcp", 2.0, "mbps", ">="), ("kcptun", 1.0, "mbps", ">="),
                       ("tcp-cubic", 10.0, "mbps", ">="), ("arctic-tcp", 0.5, "p99_ms", "<=")]
        elif loss == 0 and rtt == 20:
            checks += [("kcptun", 0.8, "mbps", ">=")]
        else:
            checks += [("arctic-tcp", None, "mbps", ">="), ("kcptun", None, "mbps", ">=")]
        for den, target, field, how in checks:
            value = ratio(samples, "arctic-kcp", den, rtt, loss, args.flows[0], field)
            what = "p99" if field == "p99_ms" else "goodput"
            if value is None:
                verdict = "not measured"
            elif target is None:
                verdict = "information"
            else:
                ok = value >= target if how == ">=" else value <= target
                verdict = f"target {how} {target:g}: {'met' if ok else 'MISSED'}"
            shown = "-" if value is None else f"{value:.2f}"
            print(f"{rtt:>4} ms {loss:>4g} %  {what:8} arctic-kcp / {den:11} {shown:>7}  {verdict}")
    fec = [s for s in samples if s.fec]
    if fec:
        print("\nFEC study: Arctic KCP goodput (1 flow), Mbit/s, by kcp_fec mode")
        modes = sorted({s.fec for s in fec})
        print(f"{'RTT':>4} {'loss':>5} " + " ".join(f"{m:>8}" for m in modes))
        for rtt, loss in sorted({(s.rtt_ms, s.loss_pct) for s in fec}):
            values = []
            for mode in modes:
                found = [s.mbps for s in fec if (s.rtt_ms, s.loss_pct, s.fec) == (rtt, loss, mode) and s.mbps]
                values.append(f"{found[0]:8.1f}" if found else f"{'-':>8}")
            print(f"{rtt:>4} {loss:>5g} " + " ".join(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", default="20,100,250", help="round-trip times in ms, comma separated")
    parser.add_argument("--losses", default="0,1,5,10", help="loss each way in percent, comma separated")
    parser.add_argument("--flows", default="1,8", help="flow counts for goodput")
    parser.add_argument("--seconds", type=int, default=6, help="iperf3 measured seconds")
    parser.add_argument("--omit", type=int, default=2, help="iperf3 seconds omitted (ramp-up)")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--window", type=int, default=4096, help="KCP windows (Arctic kcp_window, kcptun)")
    parser.add_argument("--fec-study", action="store_true", help="also Arctic KCP with FEC auto/on/off")
    parser.add_argument("--quick", action="store_true", help="RTT 20,100 x loss 0,5, 1 flow, short runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rtts, args.losses, args.flows, args.seconds, args.omit, args.latency_seconds = "20,100", "0,5", "1", 3, \
            1, 2.0
    rtts = [int(x) for x in args.rtts.split(",")]
    losses = [float(x) for x in args.losses.split(",")]
    args.flows = [int(x) for x in args.flows.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    if set(systems) - set(SYSTEMS) or not systems:
        parser.error(f"--systems: choose from {', '.join(SYSTEMS)}")
    samples: list[Sample] = []
    started = time.monotonic()
    with Lab(prefix="arcbk") as lab:
        t = wan_transit(lab)
        route_plain(t)
        start_servers(t)
        if "kcptun" in systems:
            start_kcptun(t, args.window)
        config = {"tunnel": {"kcp_window": args.window}, "log_level": "warning"}
        with ArcticPair.start(t, extra_config=config) as pair:
            tcp_sid = pair.create_service(name="bench-kcp-tcp")
            pair.add_routes(tcp_sid, {"dest_cidr": f"{ARCTIC_TCP_IP}/32", "priority": 100})
            kcp_sid = pair.create_service(name="bench-kcp", transport_type="kcp")
            pair.add_routes(kcp_sid, {"dest_cidr": f"{ARCTIC_KCP_IP}/32", "priority": 100})
            for system in systems:
                target = targets(t)[system]
                wait_until(lambda target=target: greeted(t, *target.echo), timeout=60,
                           what=f"{system} to carry a message")
            print(f"{'RTT':>4} {'loss':>5} {'system':16} {'fl':>2} {'Mbit/s':>9} {'p50 ms':>8} {'p99 ms':>8}",
                  flush=True)
            for rtt in rtts:
                for loss in losses:
                    samples += measure_cell(t, systems, rtt, loss, args)
            if args.fec_study:
                study = [(100, 0.0), (100, 1.0), (100, 5.0), (250, 10.0)]
                for mode in ("auto", "on", "off"):
                    pair.set_tunnel(kcp_fec=mode)
                    wait_until(lambda: greeted(t, *targets(t)["arctic-kcp"].echo), timeout=60,
                               what="Arctic KCP after the restart")
                    for rtt, loss in study:
                        one = argparse.Namespace(**{**vars(args), "flows": [1], "latency_seconds": 0})
                        samples += measure_cell(t, ["arctic-kcp"], rtt, loss, one, fec=mode)
            t.wan.clear()
            carried = pair.carried_by(kcp_sid)
    if not any(s.mbps for s in samples):
        print("nothing was measured: the benchmark could not run", file=sys.stderr)
        return 1
    report(samples, args)
    print(f"\ncheck: agent-a's data plane carried {carried} connections of the KCP service")
    print(f"bench/kcp took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
