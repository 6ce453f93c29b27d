"""Arctic's lab harness: hosts as network namespaces, joined by veth pairs and bridges, torn down for sure.

Shared by the lab tests, the demo, Molecule and the benchmarks (import with ``tests/`` on ``sys.path``)::

    from harness import Lab, ping, transit
    with Lab(prefix="arc") as lab:
        t = transit(lab)
        ping(t.cl, t.s1_ip)   # False: not routed until Arctic (or enable_direct_routing)

Safety rules (shared/DESIGN.md "Test lab"): only lab address ranges, no interface in the root namespace, no
default route except towards a lab gateway, and teardown touches only what this harness created.
"""

from .agents import AgentFailed, AgentProcess, agent_binary, http, lab_agent
from .lab import Host, Lab, LabTeardownError, Segment, close_all
from .netns import LabCommandError, cleanup_stale
from .probes import ping, tcp_connect
from .safety import LAB_NETWORKS, LabSafetyError, lab_address, lab_interface, lab_network, root_namespace_untouched
from .topologies import Cluster, Transit, WanTransit, cluster, transit, wan_transit
from .wan import WanError, WanLink

__all__ = [
    "LAB_NETWORKS", "AgentFailed", "AgentProcess", "Cluster", "Host", "Lab", "LabCommandError", "LabSafetyError",
    "LabTeardownError", "Segment", "Transit", "WanError", "WanLink", "WanTransit", "agent_binary", "cleanup_stale",
    "close_all", "cluster", "http", "lab_address", "lab_agent", "lab_interface", "lab_network", "ping",
    "root_namespace_untouched", "tcp_connect", "transit", "wan_transit",
]
