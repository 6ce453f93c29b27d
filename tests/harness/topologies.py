"""Ready-made topologies shared by the lab tests, the demo, Molecule and the benchmarks.

``cluster``: n agents and a controller on one segment (control-plane tests).
``transit``: the seed document's picture — a client LAN behind agent-a, servers behind agent-b, joined by a
core segment. Agent-a deliberately has no route to the server LANs, so client->server traffic flows only when
Arctic carries it (or when a baseline benchmark calls ``enable_direct_routing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lab import Host, Lab, Segment

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
