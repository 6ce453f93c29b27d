"""Reconciler behaviour against an in-memory kernel: dry run, idempotence, drift repair, failures, logging."""

from __future__ import annotations

from pathlib import Path

import pytest
from arctic.netconf.desired import DesiredState, RouteSpec, ServiceSpec
from arctic.netconf.errors import DesiredStateError, InterfaceError, NetconfError, NftError
from arctic.netconf.interfaces import InterfaceStatus, ObservedAddress, ObservedInterface
from arctic.netconf.offline import offline_reconciler
from arctic.netconf.policy import PolicyState
from arctic.netconf.reconciler import Reconciler

A, B = "svc_A", "svc_B"


class FakeNft:
    """Keeps one table. Its 'listing' deliberately differs from our text (like nft canonicalising the mark)."""

    def __init__(self) -> None:
        self.table: str | None = None
        self.scripts: list[str] = []
        self.refuse = False

    def list_table(self) -> str | None:
        return self.table

    def apply(self, script: str) -> None:
        if self.refuse:
            raise NftError("nft refused the inet arctic transaction (nothing changed): syntax error")
        self.scripts.append(script)
        body = script.split("delete table inet arctic\n", 1)[1]
        self.table = body.replace("& 0xff00ffff", "& 0xff1affff") if body.strip() else None


class FakePolicy:
    def __init__(self) -> None:
        self.state = PolicyState((), ())
        self.converged: list = []
        self.unavailable_families: set[int] = set()

    def read(self) -> PolicyState:
        return self.state

    def converge(self, spec) -> list[str]:
        self.converged.append(spec)
        before = set(self.state.lines())
        self.state = PolicyState(tuple(spec.rules), tuple(spec.routes))
        return sorted(set(self.state.lines()) - before)


class FakeDhcp:
    def __init__(self) -> None:
        self.stopped_all = False

    def running(self, name: str) -> bool:
        return False

    def stop_all(self) -> None:
        self.stopped_all = True


class FakeInterfaces:
    def __init__(self) -> None:
        self.links: dict[str, ObservedInterface] = {}
        self.dhcp = FakeDhcp()
        self.conflicts: dict[str, str] = {}
        self.retryable: set[str] = set()
        self.converge_calls: list = []
        self.fail_next: InterfaceError | None = None  # the next converge fails every service with this error

    def observe(self) -> dict[str, ObservedInterface]:
        return dict(self.links)

    def resolve_parent(self, spec, lan_interface):
        if lan_interface == "missing0":
            raise InterfaceError(f"service {spec.service_id}: parent interface 'missing0' (agent config"
                                 " lan_interface) does not exist on this host", service_id=spec.service_id)
        return "eth-net100"

    def converge(self, specs, keep=()):
        self.converge_calls.append(([s.name for s in specs], list(keep)))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            self.retryable = {s.service_id for s in specs} if error.temporary else set()
            return [], {s.service_id: str(error) for s in specs}
        self.retryable = set()
        changes = []
        for name in [n for n in self.links if n not in {s.name for s in specs} | set(keep)]:
            del self.links[name]
            changes.append(f"ip link del {name}")
        for s in specs:
            if s.name not in self.links:
                addrs = tuple(ObservedAddress(c, 4 if ":" not in c else 6, True, False) for c in s.static_addresses())
                self.links[s.name] = ObservedInterface(s.name, 7, s.service_id, s.parent, s.mac, True, addrs)
                changes.append(f"ip link add {s.name}")
        return changes, {}

    def status(self, spec, error=None, observed=None) -> InterfaceStatus:
        obs = (observed or self.links).get(spec.name)
        return InterfaceStatus(spec.service_id, spec.name, spec.parent, obs and obs.mac, spec.ipv4, spec.ipv6,
                               "up" if obs else ("error" if error else "missing"), spec.dhcp4, False, error)


class FakeSysctls:
    def __init__(self) -> None:
        self.values = {"net.ipv4.ip_forward": "0"}

    def read(self, name: str) -> str | None:
        if ".conf.arc" in name:
            return "0"
        return self.values.get(name)

    def write(self, name: str, value: str) -> None:
        self.values[name] = value


class FakeApplier:
    def __init__(self) -> None:
        self.nft, self.policy, self.interfaces, self.sysctls = FakeNft(), FakePolicy(), FakeInterfaces(), FakeSysctls()


class RecordingLogger:
    def __init__(self, subsystem: str, sink: list) -> None:
        self.subsystem, self.sink = subsystem, sink

    def _log(self, level: str, msg: str, **fields) -> None:
        self.sink.append((self.subsystem, level, msg, fields))

    def info(self, msg, **fields):
        self._log("info", msg, **fields)

    def warning(self, msg, **fields):
        self._log("warning", msg, **fields)

    def error(self, msg, **fields):
        self._log("error", msg, **fields)


def desired(*, lan_interface: str | None = None, iface: bool = False) -> DesiredState:
    out = ServiceSpec(A, "peer_a", "peer_b", "tcp", False, None, None, False, 0,
                      (RouteSpec(A, 1, "10.0.0.0/8", "192.168.100.0/24", 100, 1),))
    inbound = ServiceSpec(B, "peer_c", "peer_a", "tcp", iface, "192.168.100.10/24", None, False, 0, ())
    return DesiredState("peer_a", (out, inbound), lan_interface=lan_interface)


@pytest.fixture
def kernel() -> FakeApplier:
    return FakeApplier()


@pytest.fixture
def logs() -> list:
    return []


@pytest.fixture
def reconciler(kernel, logs, tmp_path) -> Reconciler:
    return Reconciler(kernel, lambda subsystem: RecordingLogger(subsystem, logs), state_dir=tmp_path / "state")


def test_plan_is_a_dry_run_with_a_readable_diff(reconciler, kernel):
    plan = reconciler.plan(desired())
    assert plan.changed and plan.changes == {"nftables": True, "policy": True, "interfaces": False}
    assert kernel.nft.scripts == [] and kernel.policy.converged == [] and not plan.applied
    assert "--- a/nftables (applied)\n+++ b/nftables (desired)\n" in plan.diff
    assert ('+\t\tip saddr 10.0.0.0/8 ip daddr 192.168.100.0/24 tcp flags syn / fin,syn,rst,ack tproxy ip to :61080'
            in plan.diff)
    assert "+ip -4 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080\n" in plan.diff
    assert "\n-sysctl -w net.ipv4.ip_forward=0\n" in plan.diff and "\n+sysctl -w net.ipv4.ip_forward=1\n" in plan.diff
    assert plan.to_dict()["changed"] is True


def test_apply_twice_changes_nothing_the_second_time(reconciler, kernel):
    first = reconciler.apply(desired())
    assert first.applied and len(kernel.nft.scripts) == 1 and len(kernel.policy.converged) == 1
    assert kernel.sysctls.values["net.ipv4.ip_forward"] == "1"
    second = reconciler.apply(desired())
    assert not second.changed and second.diff == "" and second.actions == []
    assert len(kernel.nft.scripts) == 1 and len(kernel.policy.converged) == 1


def test_after_an_apply_a_second_plan_is_empty_and_nothing_is_reported(reconciler, kernel, logs):
    plan = reconciler.apply(desired())
    assert plan.changed and plan.unconverged == []
    assert not [entry for entry in logs if entry[1] == "warning"]


def test_a_section_the_kernel_does_not_keep_is_named_by_the_self_check(reconciler, kernel, logs):
    """A policy routing that accepts every change and keeps none: the run after the apply would apply it again."""
    kernel.policy.converge = lambda spec: ["ip -4 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080"]
    plan = reconciler.apply(desired())
    assert plan.unconverged == ["policy"]
    warnings = [(sub, msg, fields["section"]) for sub, level, msg, fields in logs if level == "warning"]
    assert warnings == [("netmgr", "not converged: a second plan right after applying still changes a section",
                         "policy")]


def test_a_restarted_agent_with_the_same_state_dir_does_not_reapply(kernel, logs, tmp_path):
    Reconciler(kernel, lambda s: RecordingLogger(s, logs), state_dir=tmp_path / "s").apply(desired())
    again = Reconciler(kernel, lambda s: RecordingLogger(s, logs), state_dir=tmp_path / "s").plan(desired())
    assert not again.changed


def test_a_table_deleted_behind_our_back_is_noticed_and_put_back(reconciler, kernel, logs):
    reconciler.apply(desired())
    kernel.nft.table = None
    plan = reconciler.plan(desired())
    assert plan.changes["nftables"] and plan.drift == ["nftables: table inet arctic was deleted outside Arctic"]
    reconciler.apply(desired())
    assert kernel.nft.table is not None and len(kernel.nft.scripts) == 2
    assert ("fwmgr", "warning", "drift found; repairing",
            {"drift": "nftables: table inet arctic was deleted outside Arctic"}) in logs
    assert not reconciler.plan(desired()).changed


def test_a_rule_deleted_behind_our_back_is_noticed(reconciler, kernel):
    reconciler.apply(desired())
    kernel.nft.table = "\n".join(ln for ln in kernel.nft.table.splitlines() if "tproxy" not in ln) + "\n"
    plan = reconciler.plan(desired())
    assert plan.drift == ["nftables: table inet arctic was changed outside Arctic"]
    assert "+\t\tip saddr 10.0.0.0/8" in plan.diff  # the diff is against the kernel's listing
    reconciler.apply(desired())
    assert "tproxy" in kernel.nft.table


def test_a_deleted_ip_rule_is_drift_and_gets_repaired(reconciler, kernel):
    reconciler.apply(desired())
    kernel.policy.state = PolicyState(kernel.policy.state.rules[1:], kernel.policy.state.routes)
    plan = reconciler.apply(desired())
    assert any(d.startswith("policy routing: ip -4 rule add") for d in plan.drift)
    assert plan.actions == ["ip -4 rule add priority 1080 fwmark 0x1a0000/0xff0000 lookup 61080"]


def test_a_refused_nft_transaction_keeps_the_old_table_and_the_rest_still_converges(reconciler, kernel):
    reconciler.apply(desired())
    before = kernel.nft.table
    kernel.nft.refuse = True
    changed = DesiredState("peer_a", desired(iface=True).services + (
        ServiceSpec("svc_C", "peer_a", "peer_b", "tcp", False, None, None, False, 0,
                    (RouteSpec("svc_C", 1, None, "192.168.200.0/24", 1, 9),)),))
    with pytest.raises(NftError, match="nothing changed"):
        reconciler.apply(changed)
    assert kernel.nft.table == before
    assert kernel.interfaces.links  # interfaces converged although nft failed
    kernel.nft.refuse = False
    assert reconciler.plan(changed).changes["nftables"]  # and the next run retries


def test_input_that_cannot_be_rendered_changes_nothing(reconciler, kernel):
    bad = DesiredState("peer_a", (ServiceSpec(A, "peer_a", "peer_b", "tcp", False, None, None, False, 0,
                                              (RouteSpec(A, 1, "10.0.0.0/8", "fd00::/64", 1, 1),)),))
    with pytest.raises(DesiredStateError, match="mixes IPv4 and IPv6"):
        reconciler.apply(bad)
    assert kernel.nft.scripts == [] and kernel.policy.converged == [] and kernel.interfaces.converge_calls == []


def test_an_unresolvable_parent_is_reported_per_service_and_an_existing_link_is_kept(reconciler, kernel, logs):
    reconciler.apply(desired(iface=True))
    (name,) = kernel.interfaces.links
    plan = reconciler.apply(desired(iface=True, lan_interface="missing0"))
    assert "parent interface 'missing0'" in plan.errors[B]
    assert kernel.interfaces.converge_calls[-1] == ([], [name])  # kept, not torn down by a config typo
    assert plan.interface_status[0].error == plan.errors[B]
    assert any(sub == "netmgr" and level == "error" for sub, level, _, _ in logs)
    with pytest.raises(InterfaceError, match="missing0"):
        plan.raise_for_errors()


@pytest.mark.parametrize(("error", "temporary"), [
    (InterfaceError("cannot create MACVLAN arc1: RTNETLINK answers: Device or resource busy"), True),
    (InterfaceError("parent interface 'eth9' does not exist", temporary=False), False),
])
def test_an_interface_that_failed_on_a_kernel_call_makes_the_plan_temporary_a_configuration_problem_does_not(
        reconciler, kernel, error, temporary):
    kernel.interfaces.fail_next = error
    plan = reconciler.apply(desired(iface=True))
    assert plan.errors[B] == str(error) and plan.temporary is temporary


def test_interfaces_appear_in_the_plan_as_netplan_and_in_the_status(reconciler, kernel):
    plan = reconciler.apply(desired(iface=True))
    assert '+        - "192.168.100.10/24"' in plan.diff
    (status,) = plan.interface_status
    assert status.service_id == B and status.state == "up" and status.parent == "eth-net100"
    assert "sysctl -w net.ipv4.conf.arc" in plan.policy


def test_changes_are_logged_under_fwmgr_for_nft_and_netmgr_for_the_rest(reconciler, logs):
    reconciler.apply(desired(iface=True))
    assert {(s, m) for s, _, m, _ in logs} >= {("fwmgr", "nftables table replaced"), ("netmgr", "applied")}
    netmgr_changes = [f["change"] for s, _, m, f in logs if s == "netmgr" and m == "applied"]
    assert any(c.startswith("ip -4 rule add") for c in netmgr_changes)
    assert any(c.startswith("ip link add") for c in netmgr_changes)
    assert any(c.startswith("sysctl -w net.ipv4.ip_forward=1") for c in netmgr_changes)


def test_teardown_removes_table_rules_interfaces_and_restores_sysctls(reconciler, kernel, tmp_path):
    reconciler.apply(desired(iface=True))
    plan = reconciler.teardown()
    assert kernel.nft.table is None and kernel.policy.state == PolicyState((), ())
    assert kernel.interfaces.links == {} and kernel.interfaces.dhcp.stopped_all
    assert kernel.sysctls.values["net.ipv4.ip_forward"] == "0"
    assert "nft: table inet arctic deleted" in plan.actions
    assert not list(Path(tmp_path / "state").glob("nftables.*"))


def test_the_netplan_file_is_written_only_when_configured_and_removed_on_teardown(kernel, tmp_path):
    path = tmp_path / "netplan" / "60-arctic.yaml"
    rec = Reconciler(kernel, lambda s: RecordingLogger(s, []), netplan_path=path)
    rec.apply(desired(iface=True))
    assert "192.168.100.10/24" in path.read_text()
    rec.teardown()
    assert not path.exists()


def test_an_offline_reconciler_plans_against_an_empty_kernel_and_cannot_apply():
    rec = offline_reconciler()
    plan = rec.plan(desired(iface=True))
    assert plan.changes == {"nftables": True, "policy": True, "interfaces": True}
    assert "+sysctl -w net.ipv4.ip_forward=1\n" in plan.diff
    with pytest.raises(NetconfError, match="does not manage its kernel"):
        rec.apply(desired())
