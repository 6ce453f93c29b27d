"""Ready-made topologies shared by the lab tests, the demo, Molecule and the benchmarks.

``cluster``: n agents and a controller on one segment (control-plane tests).
``transit``: the seed document's picture — a client LAN behind agent-a, servers behind agent-b, joined by a
core segment. Agent-a deliberately has no route to the server LANs, so client->server traffic flows only when
Arctic carries it (or when a baseline benchmark calls ``enable_direct_routing``).
``wan_transit``: the same roles and addresses, but agent-a <-> agent-b crosses an emulated WAN (``harness.wan``):
delay, jitter, loss, bursty loss and a bottleneck rate, set per direction while it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .lab import Host, Lab, Segment
from .wan import WanLink, start_emulator

CONTROLLER_IP = "198.18.0.250"


@dataclass
class Cluster:
    lab: Lab
    segment: Segment
    agents: list[Host]
    ctl: Host
    addresses: dict[str, str] = field(default_factory=dict)  # role -> IPv4 address on the segment

    def address(self, host: Host) -> str:
        return self.addresses[host.role]


def cluster(lab: Lab, n: int) -> Cluster:
    """Agents ``a1..an`` at 198.18.0.{i}/24 and controller ``ctl`` at 198.18.0.250/24 on segment ``core``."""
    if not 1 <= n <= 200:
        raise ValueError(f"cluster size {n} must be between 1 and 200")
    seg = lab.segment("core")
    agents = []
    addresses = {}
    for i in range(1, n + 1):
        host = lab.host(f"a{i}")
        lab.attach(host, seg, f"198.18.0.{i}/24")
        agents.append(host)
        addresses[host.role] = f"198.18.0.{i}"
    ctl = lab.host("ctl")
    lab.attach(ctl, seg, f"{CONTROLLER_IP}/24")
    addresses[ctl.role] = CONTROLLER_IP
    return Cluster(lab, seg, agents, ctl, addresses)


@dataclass
class Transit:
    lab: Lab
    cl: Host
    agent_a: Host
    agent_b: Host
    s1: Host
    s2: Host
    ctl: Host
    lan: Segment  # client LAN 10.0.0.0/8: cl, agent-a
    core: Segment  # 198.18.0.0/24: agent-a, agent-b, ctl
    net100: Segment  # 192.168.100.0/24: agent-b, s1
    net200: Segment  # 192.168.200.0/24: agent-b, s2
    client_ip: str = "10.0.0.2"
    agent_a_lan_ip: str = "10.0.0.1"
    agent_a_ip: str = "198.18.0.1"
    agent_b_ip: str = "198.18.0.2"
    s1_ip: str = "192.168.100.2"
    s2_ip: str = "192.168.200.2"
    ctl_ip: str = CONTROLLER_IP
    _direct: list[tuple[Host, str]] = field(default_factory=list)

    def client_addr(self, ip: str, prefixlen: int = 16) -> str:
        """Give the client a secondary LAN address (e.g. 10.1.0.50/16) to test source-based route rules."""
        cidr = f"{ip}/{prefixlen}"
        self.cl.addr("eth-lan", cidr)
        return cidr

    def enable_direct_routing(self) -> None:
        """Plain kernel routes between the LANs (no Arctic): the baseline for benchmarks."""
        if self._direct:
            return
        plan = [(self.agent_a, "192.168.100.0/24", self.agent_b_ip),
                (self.agent_a, "192.168.200.0/24", self.agent_b_ip),
                (self.agent_b, "10.0.0.0/8", self.agent_a_ip)]
        for host, dest, via in plan:
            host.route(dest, via=via)
            self._direct.append((host, dest))

    def disable_direct_routing(self) -> None:
        while self._direct:
            host, dest = self._direct.pop()
            host.unroute(dest)


def transit(lab: Lab) -> Transit:
    cl, agent_a, agent_b = lab.host("cl"), lab.host("agent-a"), lab.host("agent-b")
    s1, s2, ctl = lab.host("s1"), lab.host("s2"), lab.host("ctl")
    lan, core = lab.segment("lan"), lab.segment("core")
    net100, net200 = lab.segment("net100"), lab.segment("net200")

    lab.attach(cl, lan, "10.0.0.2/8")
    lab.attach(agent_a, lan, "10.0.0.1/8")
    lab.attach(agent_a, core, "198.18.0.1/24")
    lab.attach(agent_b, core, "198.18.0.2/24")
    lab.attach(ctl, core, f"{CONTROLLER_IP}/24")
    lab.attach(agent_b, net100, "192.168.100.1/24")
    lab.attach(agent_b, net200, "192.168.200.1/24")
    lab.attach(s1, net100, "192.168.100.2/24")
    lab.attach(s2, net200, "192.168.200.2/24")

    lab.default_via(cl, "10.0.0.1")
    lab.default_via(s1, "192.168.100.1")
    lab.default_via(s2, "192.168.200.1")
    return Transit(lab, cl, agent_a, agent_b, s1, s2, ctl, lan, core, net100, net200)


# --- transit across an emulated WAN ---------------------------------------------------------------------------

WAN_SELF_IP = "198.18.0.253"  # the emulator namespace's own address (source of its ARP requests and ICMP errors)
WAN_A_IF, WAN_B_IF = "eth-a", "eth-b"  # the emulator namespace's legs: on segment core / wired to agent-b
WAN_TUNS = {"ab": "tun-ab", "ba": "tun-ba"}
WAN_TABLES = {"ab": 100, "ba": 101}
A_SIDE = ("198.18.0.0/24", "10.0.0.0/8")  # what lives on agent-a's side (agent-a, ctl, the client LAN)
B_SIDE = ("198.18.0.2/32", "192.168.100.0/24", "192.168.200.0/24")  # agent-b and the server LANs


@dataclass
class WanTransit(Transit):
    """A ``Transit`` whose agent-a <-> agent-b path crosses the emulator namespace ``wan_host``.

    ``wan`` configures the link, e.g. ``t.wan.set(delay_ms=50, jitter_ms=5, loss=0.05, rate_mbit=100)``;
    direction "ab" is agent-a -> agent-b (and everything from side A to side B), "ba" the reverse.
    """

    wan_host: Host = field(kw_only=True)
    wan: WanLink = field(kw_only=True)
    ctl_via_wan: bool = field(default=False, kw_only=True)

    def kernel_counters(self) -> dict[str, Any]:
        """What the emulator namespace's kernel saw: nft guard counters and per-interface packet counters.

        ``bypass_ab``/``bypass_ba`` count (and dropped) packets that tried to go between the two legs without the
        emulator; ``to_emulator_*``/``from_emulator_*`` count forwarded packets into and out of each TUN device.
        """
        out = self.wan_host.run("nft", "-j", "list", "counters", "table", "ip", "wan_guard").stdout
        counters = {item["counter"]["name"]: item["counter"]["packets"]
                    for item in json.loads(out)["nftables"] if "counter" in item}
        links = json.loads(self.wan_host.ip("-s", "-j", "link", "show").stdout)
        return {"nft": counters, "links": {link["ifname"]: link["stats64"] for link in links}}


def wan_transit(lab: Lab, *, ctl_via_wan: bool = False, seed: int | None = None,
                tun_queue: int = 4096) -> WanTransit:
    """``transit`` with an emulated WAN between agent-a (with ctl and the client LAN) and agent-b (with s1, s2).

    Addresses, roles and the agents' interface names are those of ``transit``. The core segment holds agent-a,
    ctl and the emulator namespace ``wan``; agent-b's ``eth-core`` is wired to ``wan`` directly. ``wan`` answers
    ARP for the far side (proxy ARP), so both agents still see one 198.18.0.0/24, and routes between the sides
    only through its TUN devices; an nft guard there drops (and counts) anything that would go around them.
    ctl's traffic to agent-b goes around the emulator unless ``ctl_via_wan`` (a controller is an instrument, so
    by default impairments apply to agent-to-agent traffic only). ``tun_queue`` is each TUN device's kernel
    queue in packets, in front of the emulator: it only fills when the emulator cannot keep up, and 4096 absorbs
    the bursts of a 1 Gbit/s UDP sender that shares the 2 vCPUs with it (1000 lost 0.4 % of them). ``seed``
    makes the emulator's random draws reproducible. IPv4 only: the emulator namespace has IPv6 off.
    """
    cl, agent_a, agent_b = lab.host("cl"), lab.host("agent-a"), lab.host("agent-b")
    s1, s2, ctl = lab.host("s1"), lab.host("s2"), lab.host("ctl")
    emu = lab.host("wan")
    # IPv4 only across the emulated WAN; without IPv6 the namespace also sends nothing of its own into the TUNs
    emu.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    lan, core = lab.segment("lan"), lab.segment("core")
    net100, net200 = lab.segment("net100"), lab.segment("net200")

    lab.attach(cl, lan, "10.0.0.2/8")
    lab.attach(agent_a, lan, "10.0.0.1/8")
    lab.attach(agent_a, core, "198.18.0.1/24")
    lab.attach(ctl, core, f"{CONTROLLER_IP}/24")
    lab.attach(emu, core, f"{WAN_SELF_IP}/32", ifname=WAN_A_IF)
    lab.wire(emu, agent_b, f"{WAN_SELF_IP}/32", "198.18.0.2/24", ifname_a=WAN_B_IF, ifname_b="eth-core")
    lab.attach(agent_b, net100, "192.168.100.1/24")
    lab.attach(agent_b, net200, "192.168.200.1/24")
    lab.attach(s1, net100, "192.168.100.2/24")
    lab.attach(s2, net200, "192.168.200.2/24")
    lab.default_via(cl, "10.0.0.1")
    lab.default_via(s1, "192.168.100.1")
    lab.default_via(s2, "192.168.200.1")

    _wan_router(emu, ctl_via_wan=ctl_via_wan, tun_queue=tun_queue)
    link = start_emulator(emu, WAN_TUNS, name=f"wan-{lab.tag}", seed=seed)
    return WanTransit(lab, cl, agent_a, agent_b, s1, s2, ctl, lan, core, net100, net200,
                      wan_host=emu, wan=link, ctl_via_wan=ctl_via_wan)


def _wan_router(emu: Host, *, ctl_via_wan: bool, tun_queue: int) -> None:
    """Routing inside the emulator namespace: each side's traffic into its TUN device, from there on by main."""
    for leg in (WAN_A_IF, WAN_B_IF):  # answer ARP for the far side at once (the default proxy_delay is random)
        emu.run("sysctl", "-q", "-w", f"net.ipv4.conf.{leg}.proxy_arp=1", f"net.ipv4.neigh.{leg}.proxy_delay=0")
    emu.route("198.18.0.0/24", dev=WAN_A_IF)
    emu.route("198.18.0.2/32", dev=WAN_B_IF)
    emu.route("10.0.0.0/8", via="198.18.0.1")
    emu.route("192.168.100.0/24", via="198.18.0.2")
    emu.route("192.168.200.0/24", via="198.18.0.2")
    for direction, leg, far_side in (("ab", WAN_A_IF, B_SIDE), ("ba", WAN_B_IF, A_SIDE)):
        tun, table = WAN_TUNS[direction], WAN_TABLES[direction]
        emu.add_tun(tun, txqueuelen=tun_queue)
        emu.run("sysctl", "-q", "-w", f"net.ipv4.conf.{tun}.rp_filter=0")
        for prefix in far_side:
            emu.route(prefix, dev=tun, table=table)
        emu.ip("rule", "add", "pref", "1000", "iif", leg, "lookup", table)
    guard = ["table ip wan_guard {"]
    guard += [f"  counter {n} {{}}" for n in ("ctl", "bypass_ab", "bypass_ba", "to_emulator_ab",
                                               "from_emulator_ab", "to_emulator_ba", "from_emulator_ba")]
    guard += ["  chain forward {", "    type filter hook forward priority filter; policy accept;"]
    if not ctl_via_wan:  # the controller talks to agent-b around the emulator
        emu.ip("rule", "add", "pref", "900", "iif", WAN_A_IF, "from", CONTROLLER_IP, "lookup", "main")
        emu.ip("rule", "add", "pref", "900", "iif", WAN_B_IF, "to", CONTROLLER_IP, "lookup", "main")
        guard += [f'    iifname "{WAN_A_IF}" oifname "{WAN_B_IF}" ip saddr {CONTROLLER_IP} counter name "ctl" accept',
                  f'    iifname "{WAN_B_IF}" oifname "{WAN_A_IF}" ip daddr {CONTROLLER_IP} counter name "ctl" accept']
    guard += [f'    iifname "{WAN_A_IF}" oifname "{WAN_B_IF}" counter name "bypass_ab" drop',
              f'    iifname "{WAN_B_IF}" oifname "{WAN_A_IF}" counter name "bypass_ba" drop',
              f'    iifname "{WAN_A_IF}" oifname "tun-ab" counter name "to_emulator_ab"',
              f'    iifname "tun-ab" oifname "{WAN_B_IF}" counter name "from_emulator_ab"',
              f'    iifname "{WAN_B_IF}" oifname "tun-ba" counter name "to_emulator_ba"',
              f'    iifname "tun-ba" oifname "{WAN_A_IF}" counter name "from_emulator_ba"',
              "  }", "}"]
    emu.run("nft", "-f", "-", input="\n".join(guard) + "\n")
