"""Service interfaces for real: MACVLAN on the right parent, static or DHCP address, clean failure, clean removal,
and no address another host already uses (issue 14, item 3).

Topology per test: the target peer ``tgt`` sits on LAN segment ``net100`` (192.168.100.0/24) and on ``core``
(198.18.0.0/24, its default route); ``srv`` is another host on ``net100`` (the DHCP server when one is needed, the
host already holding the address in the conflict tests).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import harness`, also without tests/conftest.py

from arctic.logs import get_logger  # noqa: E402
from arctic.netconf.applier import LinuxKernel  # noqa: E402
from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec  # noqa: E402
from arctic.netconf.errors import InterfaceError  # noqa: E402
from arctic.netconf.interfaces import InterfaceSpec  # noqa: E402
from arctic.netconf.naming import interface_mac, interface_name  # noqa: E402
from arctic.netconf.probe import ArpProbe, ProbeError  # noqa: E402
from arctic.netconf.reconciler import Reconciler  # noqa: E402
from harness import Host, Lab, ping, root_namespace_untouched  # noqa: E402

pytestmark = pytest.mark.lab

SVC = "svc_01HSERVICEINTERFACE000000"
NAME = interface_name(SVC)


@pytest.fixture(autouse=True)
def root_namespace_is_left_alone() -> Iterator[None]:
    with root_namespace_untouched("a netconf lab test"):
        yield


class RecordedLogs:
    """Log factory for the reconciler: each line goes to the real subsystem logger and is kept for assertions."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str, dict]] = []

    def __call__(self, subsystem: str) -> RecordedLogs.Logger:
        return RecordedLogs.Logger(subsystem, self.lines)

    class Logger:
        def __init__(self, subsystem: str, lines: list) -> None:
            self.subsystem, self.lines, self.real = subsystem, lines, get_logger(subsystem)

        def __getattr__(self, level: str):
            def log(msg: str, **fields) -> None:
                self.lines.append((self.subsystem, level, msg, fields))
                getattr(self.real, level)(msg, **fields)
            return log


@dataclass
class Site:
    lab: Lab
    tgt: Host
    srv: Host
    rec: Reconciler
    logs: RecordedLogs

    def apply(self, desired: DesiredState):
        return self.tgt.call(self.rec.apply, desired, timeout=120)

    def sh(self, *argv: str, check: bool = True) -> str:
        return self.tgt.run(*argv, check=check).stdout

    def links(self) -> list[str]:
        return [ln.split(":")[1].strip().split("@")[0] for ln in self.sh("ip", "-o", "link").splitlines()]


@pytest.fixture
def site() -> Iterator[Site]:
    with Lab(prefix="arcif") as lab:
        tgt, srv, gw = lab.host("tgt"), lab.host("srv"), lab.host("gw")
        net100, core = lab.segment("net100"), lab.segment("core")
        lab.attach(tgt, net100, "192.168.100.1/24")
        lab.attach(srv, net100, "192.168.100.2/24")
        lab.attach(tgt, core, "198.18.0.2/24")
        lab.attach(gw, core, "198.18.0.254/24")
        lab.default_via(tgt, "198.18.0.254")
        state = lab.run_dir / "netconf"
        logs = RecordedLogs()
        rec = tgt.call(lambda: Reconciler(LinuxKernel(dhcp_dir=state / "dhcp"), logs, state_dir=state))
        s = Site(lab, tgt, srv, rec, logs)
        try:
            yield s
        finally:
            try:
                tgt.call(rec.teardown, timeout=60)
            finally:
                rec.applier.interfaces.dhcp.stop_all()


def target_side(*, ipv4: str | None = None, ipv6: str | None = None, transparent: bool = False,
                lan_interface: str | None = None) -> DesiredState:
    svc = ServiceSpec(SVC, "peer_a", "peer_b", "tcp", True, ipv4, ipv6, transparent, 0,
                      (RouteSpec(SVC, 1, "10.0.0.0/8", "192.168.100.0/24", 100, 1),))
    return DesiredState("peer_b", (svc,), lan_interface=lan_interface)


def test_a_static_service_interface_is_a_macvlan_on_the_interface_that_routes_its_address(site):
    plan = site.apply(target_side(ipv4="192.168.100.10/24", ipv6="fd00:100::10/64"))
    assert plan.errors == {}
    (status,) = plan.interface_status
    # the default route points at eth-core, but 192.168.100.0/24 is routed by eth-net100: that is the parent
    assert (status.name, status.parent, status.mac, status.state) == (NAME, "eth-net100", interface_mac(SVC), "up")
    assert (status.ipv4_cidr, status.ipv6_cidr, status.dhcp) == ("192.168.100.10/24", "fd00:100::10/64", False)
    details = site.sh("ip", "-d", "link", "show", NAME)
    assert f"{NAME}@eth-net100" in details and "macvlan mode bridge" in details and f"alias arctic {SVC}" in details
    assert ping(site.srv, "192.168.100.10")  # reachable from the destination network
    assert site.sh("sysctl", "-n", f"net.ipv4.conf.{NAME}.rp_filter").strip() == "2"
    assert not site.tgt.call(site.rec.plan, target_side(ipv4="192.168.100.10/24", ipv6="fd00:100::10/64")).changed


def test_without_a_route_for_the_address_the_default_route_interface_is_the_parent(site):
    plan = site.apply(target_side(ipv4="172.31.5.10/24"))
    assert plan.interface_status[0].parent == "eth-core"


def test_changing_the_desired_address_replaces_it_in_place(site):
    site.apply(target_side(ipv4="192.168.100.10/24"))
    index = site.sh("cat", f"/sys/class/net/{NAME}/ifindex")
    plan = site.apply(target_side(ipv4="192.168.100.11/24"))
    assert plan.actions[:2] == [f"ip addr del 192.168.100.10/24 dev {NAME}",
                                f"ip addr add 192.168.100.11/24 dev {NAME}"]
    assert site.sh("cat", f"/sys/class/net/{NAME}/ifindex") == index


def test_a_transparent_target_has_its_interface_the_reply_rule_and_the_fwmark_route(site):
    site.apply(target_side(ipv4="192.168.100.10/24", transparent=True))
    listing = site.sh("nft", "list", "table", "inet", "arctic")
    assert "socket transparent 1" in listing and "tproxy" not in listing
    assert "fwmark 0x1a0000/0xff0000 lookup 61080" in site.sh("ip", "rule")
    assert NAME in site.links()


def test_a_missing_parent_is_a_clear_error_and_leaves_nothing_behind(site):
    plan = site.apply(target_side(ipv4="192.168.100.10/24", lan_interface="nosuch0"))
    assert "parent interface 'nosuch0' (agent config lan_interface) does not exist" in plan.errors[SVC]
    assert plan.interface_status[0].state == "error"
    assert NAME not in site.links()
    manager = site.rec.applier.interfaces
    spec = InterfaceSpec(SVC, NAME, interface_mac(SVC), "192.168.100.10/24", None, parent="nosuch0")
    with pytest.raises(InterfaceError, match="parent interface 'nosuch0' does not exist"):
        site.tgt.call(manager.ensure, spec)
    assert NAME not in site.links()


def test_a_failing_address_removes_the_new_link_again(site):
    # New links get IPv6 disabled, so adding the IPv6 address fails after the link was created.
    site.sh("sysctl", "-w", "net.ipv6.conf.default.disable_ipv6=1")
    plan = site.apply(target_side(ipv4="192.168.100.10/24", ipv6="fd00:100::10/64"))
    assert f"cannot add address fd00:100::10/64 to {NAME} (parent 'eth-net100')" in plan.errors[SVC]
    assert NAME not in site.links()


def test_deleting_the_service_leaves_no_interface_rule_route_or_table(site):
    site.apply(target_side(ipv4="192.168.100.10/24", transparent=True))
    plan = site.apply(DesiredState("peer_b", ()))
    assert f"ip link del {NAME}" in plan.actions
    assert NAME not in site.links() and "192.168.100.10" not in site.sh("ip", "addr")
    assert site.sh("nft", "list", "tables").strip() == ""
    assert "61080" not in site.sh("ip", "rule") + site.sh("ip", "-6", "rule")
    assert site.sh("ip", "route", "show", "table", "61080", check=False).strip() == ""


def test_an_interface_deleted_behind_our_back_is_recreated(site):
    site.apply(target_side(ipv4="192.168.100.10/24"))
    site.sh("ip", "link", "del", NAME)
    plan = site.apply(target_side(ipv4="192.168.100.10/24"))
    assert plan.changes["interfaces"] and plan.interface_status[0].state == "up"


def test_without_an_ipv4_cidr_the_interface_gets_its_address_by_dhcp(site):
    leases = site.lab.run_dir / "dnsmasq.leases"
    with (site.lab.run_dir / "dnsmasq.log").open("wb") as log:
        site.srv.popen("dnsmasq", "--no-daemon", "--port=0", "--interface=eth-net100", "--bind-interfaces",
                       "--dhcp-range=192.168.100.50,192.168.100.60,255.255.255.0,2m", f"--dhcp-leasefile={leases}",
                       "--pid-file", "--user=root", "--group=root", "--dhcp-authoritative",
                       stdout=log, stderr=subprocess.STDOUT)
    desired = target_side(lan_interface="eth-net100")
    plan = site.apply(desired)
    assert plan.errors == {} and f"dhcp client started on {NAME}" in plan.actions
    deadline = time.monotonic() + 30
    while not (status := site.tgt.call(site.rec.status, desired)[0]).ipv4_cidr and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status.dhcp and status.dhcp_running and status.mac == interface_mac(SVC)
    assert status.ipv4_cidr is not None and status.ipv4_cidr.endswith("/24")
    assert 50 <= int(status.ipv4_cidr.split("/")[0].rsplit(".", 1)[1]) <= 60  # from dnsmasq's range
    assert "dynamic" in site.sh("ip", "addr", "show", NAME)  # expires by itself if the client dies
    assert "default" not in site.sh("ip", "route", "show", "dev", NAME)  # never steals the default route
    assert not site.tgt.call(site.rec.plan, desired).changed
    pid = site.rec.applier.interfaces.dhcp.pid(NAME)
    site.apply(DesiredState("peer_b", ()))
    assert NAME not in site.links() and not os.path.exists(f"/proc/{pid}")


# --- address conflicts: probed just before assigning, never assigned while another host holds the address ---------

class CountingArp:
    """The real ARP probe, counted: shows when the reconciler probes the LAN and when it leaves it alone."""

    def __init__(self) -> None:
        self.probe, self.asked = ArpProbe(), []

    def holder(self, ifname: str, mac: str, address: str) -> str | None:
        self.asked.append(address)
        return self.probe.holder(ifname, mac, address)


def test_an_ipv4_address_another_lan_host_holds_is_not_assigned_until_that_host_drops_it(site):
    site.srv.addr("eth-net100", "192.168.100.10/24")
    srv_mac = site.srv.run("cat", "/sys/class/net/eth-net100/address").stdout.strip()
    arp = site.rec.applier.interfaces.arp = CountingArp()
    desired = target_side(ipv4="192.168.100.10/24")

    plan = site.apply(desired)
    error = plan.errors[SVC]
    assert f"address conflict on {NAME}" in error and "desired_ipv4_cidr 192.168.100.10/24" in error
    assert f"MAC {srv_mac}" in error and "Not assigned" in error
    (status,) = plan.interface_status
    assert (status.state, status.ipv4_cidr, status.error) == ("error", None, error)
    assert NAME in site.links()  # the MACVLAN stays, up and without the address (the documented choice)
    assert "192.168.100.10" not in site.sh("ip", "addr", "show", NAME)
    assert ("netmgr", "error", "service interface failed", {"service_id": SVC, "error": error}) in site.logs.lines
    assert site.tgt.call(site.rec.plan, desired).errors == {SVC: error}  # a dry run says why, without probing
    assert site.tgt.call(site.rec.status, desired)[0].state == "error"
    assert site.apply(desired).errors == {SVC: error}  # the next run probes again: still taken
    assert arp.asked == ["192.168.100.10", "192.168.100.10"]

    site.srv.ip("addr", "del", "192.168.100.10/24", "dev", "eth-net100")
    plan = site.apply(desired)
    assert plan.errors == {} and f"ip addr add 192.168.100.10/24 dev {NAME}" in plan.actions
    assert (plan.interface_status[0].state, plan.interface_status[0].ipv4_cidr) == ("up", "192.168.100.10/24")
    assert ping(site.srv, "192.168.100.10")
    assert not site.tgt.call(site.rec.plan, desired).changed
    site.apply(desired)
    assert len(arp.asked) == 3  # an address the link holds is not probed again


def test_an_ipv6_address_that_fails_duplicate_address_detection_is_removed_until_that_host_drops_it(site):
    # The lab's hosts default to accept_dad=0: the agent switches DAD on for its own link.
    site.srv.addr("eth-net100", "fd00:100::10/64")
    desired = target_side(ipv4="192.168.100.10/24", ipv6="fd00:100::10/64")

    plan = site.apply(desired)
    assert ("desired_ipv6_cidr fd00:100::10/64 is already used on the LAN (IPv6 duplicate address detection failed)"
            in plan.errors[SVC])
    (status,) = plan.interface_status
    assert (status.state, status.ipv4_cidr, status.ipv6_cidr) == ("error", "192.168.100.10/24", None)
    assert "fd00:100::10" not in site.sh("ip", "-6", "addr", "show", NAME)  # not even left as "dadfailed"

    site.srv.ip("addr", "del", "fd00:100::10/64", "dev", "eth-net100")
    plan = site.apply(desired)
    assert plan.errors == {} and plan.interface_status[0].ipv6_cidr == "fd00:100::10/64"
    shown = site.sh("ip", "-6", "addr", "show", NAME)
    assert "fd00:100::10/64" in shown and "tentative" not in shown and "dadfailed" not in shown


def test_an_address_the_kernel_marked_dadfailed_after_the_run_is_removed_and_probed_again(site):
    """DAD that ends after a run (no carrier yet) can still fail: the next run must not count it as held."""
    site.apply(target_side(ipv4="192.168.100.10/24"))
    site.srv.addr("eth-net100", "fd00:100::10/64")
    site.sh("sysctl", "-w", f"net.ipv6.conf.{NAME}.accept_dad=1")
    site.sh("ip", "addr", "add", "fd00:100::10/64", "dev", NAME)  # what a late DAD failure leaves behind
    deadline = time.monotonic() + 10
    while "dadfailed" not in site.sh("ip", "-6", "addr", "show", NAME):
        assert time.monotonic() < deadline, "the kernel never marked the duplicate address dadfailed"
        time.sleep(0.05)
    desired = target_side(ipv4="192.168.100.10/24", ipv6="fd00:100::10/64")
    assert site.tgt.call(site.rec.status, desired)[0].ipv6_cidr is None  # a failed address is not shown as held
    plan = site.apply(desired)  # removed, probed again: still taken, so not added
    assert f"ip addr del fd00:100::10/64 dev {NAME}" in plan.actions
    assert "desired_ipv6_cidr fd00:100::10/64 is already used on the LAN" in plan.errors[SVC]
    assert "fd00:100::10" not in site.sh("ip", "-6", "addr", "show", NAME)

    site.srv.ip("addr", "del", "fd00:100::10/64", "dev", "eth-net100")
    plan = site.apply(desired)
    assert plan.errors == {} and f"ip addr add fd00:100::10/64 dev {NAME}" in plan.actions
    shown = site.sh("ip", "-6", "addr", "show", NAME)
    assert "fd00:100::10/64" in shown and "dadfailed" not in shown


def test_an_address_of_another_interface_of_this_host_is_a_conflict_too(site):
    # An ARP probe cannot see it: a MACVLAN in bridge mode does not talk to its own parent.
    plan = site.apply(target_side(ipv4="192.168.100.1/24"))
    assert "desired_ipv4_cidr 192.168.100.1/24 is already an address of eth-net100 on this host" in plan.errors[SVC]
    assert "192.168.100.1/" not in site.sh("ip", "addr", "show", NAME)


class UnusableArp:
    def holder(self, ifname: str, mac: str, address: str) -> str | None:
        raise ProbeError(errno.EPERM, "Operation not permitted")


def test_a_probe_that_cannot_run_is_a_clear_error_and_leaves_no_link(site):
    site.rec.applier.interfaces.arp = UnusableArp()
    plan = site.apply(target_side(ipv4="192.168.100.10/24"))
    assert ("cannot check whether 192.168.100.10 is free on the LAN: Operation not permitted; the agent needs"
            " CAP_NET_RAW") in plan.errors[SVC]
    assert NAME not in site.links()  # not a conflict: creation stays all-or-nothing
