"""The ``arctic`` rows of bench/bandwidth: bandwidth limits measured through two real agents.

``harness.transit`` with two real ``arctic-agent run`` processes (``harness.arcticlab.ArcticPair``): client ``cl``
-> agent-a ==tunnel==> agent-b -> s1. One service (route 192.168.100.0/24) whose limit is set through the REST API
exactly as an operator sets it; its reconcilers install the HTB classes and its data planes put each tunnel
connection on a flow slot. The flows (``flows.py``) run from ``cl`` to a ``FlowServer`` on s1 and carry *no*
priority of their own: whatever shaping they meet is Arctic's.

* ``up`` (source -> target) is shaped by agent-a on its interface towards agent-b, ``down`` by agent-b;
* the wire rate is what the service's HTB class on that agent sent (tunnel frames: TCP/IP headers, TLS records);
* goodput is the flows' payload at the receiver, so it also pays for the tunnel's own overhead.

Also measured here: what Arctic's root qdisc costs a service that has no limit (iperf3 through an unlimited
service, with no root on the interface vs with the root that a limited neighbour service brings).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import Any

from arctic.netconf.qos_kernel import TcKernel
from arctic.netconf.qos_model import classid
from harness import Lab, transit
from harness.arcticlab import ArcticPair, wait_until

from bandwidth.flows import FlowServer, measure_window, open_flow

S1, S2 = "192.168.100.2", "192.168.200.2"
FLOW_PORT, IPERF_PORT = 7401, 5201


class AgentBench:
    """A transit lab with two real agents and one service to shape; ``close()`` tears everything down."""

    def __init__(self, seconds: float, *, encryption: str = "tls") -> None:
        self.seconds = seconds
        self.lab = Lab(prefix="arcba")
        try:
            self.t = transit(self.lab)
            self.pair = ArcticPair.start(self.t, encryption=encryption)
            self.sid = self.pair.create_service(name="bench-bandwidth")
            self.pair.add_routes(self.sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})
            self.server = FlowServer(self.t.s1, S1, FLOW_PORT, max_seconds=3600)
            for name in ("a", "b"):
                wait_until(lambda name=name: self._block(name) is not None, timeout=30,
                           what=f"agent-{name} to configure the service")
                wait_until(lambda name=name: self.pair.dataplane_ready(name), timeout=30,
                           what=f"agent-{name}'s data plane")
            self.base = {name: self._block(name) for name in ("a", "b")}
            self.dev = {name: self.host(name).call(TcKernel().route_dev, self.other_ip(name)) for name in ("a", "b")}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        pair = getattr(self, "pair", None)
        try:
            if pair is not None:
                pair.stop()
        finally:
            self.lab.close()

    # --- the agents ---------------------------------------------------------------------------------------------

    def host(self, name: str) -> Any:
        return self.t.agent_a if name == "a" else self.t.agent_b

    def other_ip(self, name: str) -> str:
        return self.t.agent_b_ip if name == "a" else self.t.agent_a_ip

    def _block(self, name: str, sid: str | None = None) -> int | None:
        """The service's class block on agent-``name``: its data plane's slot priorities, masked to the base."""
        sid = sid or self.sid
        for svc in self.pair.dataplane_config(name).get("services", []):
            if svc["id"] == sid and svc.get("so_priorities"):
                return svc["so_priorities"][0] & 0xFFE0
        return None

    def shaped_at(self, name: str) -> int:
        """The ceil (bit/s) of the service class on agent-``name`` (0: no class, i.e. unlimited)."""
        classes = self.host(name).call(TcKernel().htb_classes, self.dev[name])
        return next((c.ceil_bps for c in classes if c.minor == self.base[name]), 0)

    def shape(self, rate_mbps: int, sid: str | None = None) -> None:
        """``PUT /v1/services/{id}`` with the limit, then wait until both agents' kernels have it."""
        sid = sid or self.sid
        self.pair.api("PUT", f"/v1/services/{sid}", json={"bandwidth_limit_mbps": rate_mbps})
        if sid == self.sid:
            wait_until(lambda: all(self.shaped_at(n) == rate_mbps * 1_000_000 for n in ("a", "b")), timeout=30,
                       interval=0.05, what=f"both agents to shape at {rate_mbps} Mbit/s")

    # --- measuring ----------------------------------------------------------------------------------------------

    def run(self, rate: int, direction: str, nflows: int) -> tuple[list[float], float]:
        """Goodput per flow and the wire rate of the service class (Mbit/s), ``nflows`` flows in ``direction``."""
        egress = "a" if direction == "up" else "b"
        host, dev, service_class = self.host(egress), self.dev[egress], classid(self.base[egress])
        flows = [open_flow(self.t.cl, self.server, direction, 0) for _ in range(nflows)]
        try:
            time.sleep(2.0 if rate < 100 else 1.0 if rate < 1000 else 0.7)  # TCP start-up, as the emulated rows
            per_flow, wire = measure_window(flows, host, dev, service_class, self.seconds)
        finally:
            for f in flows:
                f.close()
        time.sleep(0.4)  # let queues drain before the next row
        return per_flow, wire

    def iperf_mbps(self, seconds: int = 2) -> float:
        out = self.t.cl.run("iperf3", "-c", S2, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                            timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6

    def unshaped_cost(self, runs: int = 3) -> dict[str, float]:
        """iperf3 through an *unlimited* service (to s2): without any root qdisc, and with Arctic's root on the
        same interfaces because the bench service (idle) has a limit. Medians of ``runs``; ratio ~1.0 is free."""
        other = self.pair.create_service(name="bench-unlimited")
        self.pair.add_routes(other, {"dest_cidr": "192.168.200.0/24", "priority": 100})
        self.t.s2.popen("iperf3", "-s", "-B", S2, "-p", str(IPERF_PORT), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        for name in ("a", "b"):
            wait_until(lambda name=name: self._block(name, other) is not None, timeout=30,
                       what=f"agent-{name} to configure the unlimited service")
        wait_until(lambda: self.t.cl.run("iperf3", "-c", S2, "-p", str(IPERF_PORT), "-t", "1", check=False,
                                         timeout=30).returncode == 0, timeout=30, what="iperf3 through the service")
        bare, rooted = [], []
        try:
            for _ in range(runs):
                self.shape(0)
                bare.append(self.iperf_mbps())
                self.shape(100)
                rooted.append(self.iperf_mbps())
        finally:
            self.pair.api("DELETE", f"/v1/services/{other}")
            self.shape(0)
        b, r = statistics.median(bare), statistics.median(rooted)
        return {"no_qdisc_mbps": round(b), "arctic_root_mbps": round(r), "ratio": round(r / b, 3)}
