"""Level-triggered reconciler: desired state -> rendered text -> kernel, applied only when something differs.

``plan(desired)`` renders everything and compares it with what is applied, without changing anything (the API's
dry run). ``apply(desired)`` does the same and then converges each part:

1. policy routing (added before the rules that depend on it, removed after them),
2. ``table inet arctic`` as one atomic ``nft -f`` transaction (on error the previous table stays, untouched),
3. service interfaces (MACVLAN + static address or DHCP client; a static address is probed for conflicts on the
   LAN just before it is added, and one in use elsewhere is not added but reported in ``errors``),
4. sysctls, recorded so they can be put back,
5. the netplan file, when configured.

After an apply that changed something, a second plan must come out empty (``unconverged`` names the sections
that do not, logged under ``netmgr``).

Drift repair is the same call: ``apply`` compares against the *kernel* (nft listing vs. what it listed right after
our last apply; rules, routes, links and addresses read over netlink), so a deleted table, rule or interface is
noticed and put back on the next periodic run. ``teardown`` removes everything Arctic owns.
Logs: nftables under subsystem ``fwmgr``; interfaces, rules, routes and sysctls under ``netmgr``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arctic.fileutil import replace_private_file

from ..logs import get_logger
from . import ruleset as rs
from . import sysctl
from .desired import DesiredState, empty
from .errors import InterfaceError, NftError
from .interfaces import InterfaceSpec, InterfaceStatus, ObservedInterface, interface_specs
from .netplan import render_netplan
from .policy import LocalRoute, PolicySpec, RuleEntry, policy_spec, spec_lines
from .ports import KernelApplier
from .state import StateStore
from .textdiff import unified

NFT_APPLIED = "nftables.applied.nft"
NFT_READBACK = "nftables.readback.nft"
SYSCTL_RECORD = "sysctl.json"


@dataclass
class Plan:
    """Rendered desired state, what differs from the kernel, and (after ``apply``) what was done."""

    nftables: str  # the table as it should be listed; "" = no table
    nft_script: str  # the transaction ``nft -f`` gets
    policy: str  # ip rule / ip route / sysctl lines
    interfaces: str  # netplan YAML of the service interfaces
    diff: str  # unified diff, applied -> desired, per section
    changes: dict[str, bool]  # section -> differs
    drift: list[str] = field(default_factory=list)  # kernel state that differs from what we last applied
    errors: dict[str, str] = field(default_factory=dict)  # service id -> why its interface cannot be made
    applied: bool = False
    actions: list[str] = field(default_factory=list)
    interface_status: list[InterfaceStatus] = field(default_factory=list)
    nft_seconds: float | None = None
    nft_error: str | None = None  # what nft said about the transaction (``plan(check=True)`` or a failed apply)
    unconverged: list[str] = field(default_factory=list)  # sections a second plan right after ``apply`` still changes
    temporary: bool = False  # an interface failed on a kernel call that may pass (the worker retries soon)

    @property
    def changed(self) -> bool:
        return any(self.changes.values())

    def raise_for_errors(self) -> None:
        if self.errors:
            raise InterfaceError("; ".join(self.errors[k] for k in sorted(self.errors)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["changed"] = self.changed
        return out


@dataclass
class _Work:
    """Everything ``plan`` computed that ``apply`` needs."""

    plan: Plan
    ruleset: rs.NftRuleset
    policy: PolicySpec
    specs: list[InterfaceSpec]
    sysctls: dict[str, str]
    record: dict[str, dict[str, Any]]


class Reconciler:
    def __init__(self, applier: KernelApplier, log: Callable[[str], Any] = get_logger, *, state_dir: Path | None = None,
                 netplan_path: Path | None = None) -> None:
        self.applier = applier
        self.fw_log = log("fwmgr")
        self.net_log = log("netmgr")
        self.state = StateStore(state_dir)
        self.netplan_path = Path(netplan_path) if netplan_path else None
        self.last_plan: Plan | None = None
        self._lock = threading.RLock()

    # --- public API ---------------------------------------------------------------------------------------------

    def plan(self, desired: DesiredState, *, check: bool = False) -> Plan:
        """Render and compare; changes nothing. Raises ``DesiredStateError`` for input that cannot be rendered.

        ``check=True`` also asks the kernel whether it would accept the nft transaction (``nft -c``), which is
        what a dry run should report; ``nft_error`` then holds the refusal, if any.
        """
        with self._lock:
            plan = self._plan(desired).plan
            plan.errors = self._known_conflicts(desired) | plan.errors
            if check:
                plan.nft_error = self.applier.nft.check(plan.nft_script)
            return plan

    def apply(self, desired: DesiredState) -> Plan:
        """Converge the kernel to ``desired`` (only the parts that differ). Interface failures are reported in
        ``plan.errors`` (and logged) while everything else still converges; an nft failure raises ``NftError``
        after the other parts ran, with the previous table still in place."""
        with self._lock:
            work = self._plan(desired)
            plan = work.plan
            self._log_drift(plan)
            nft_error: NftError | None = None
            if work.policy.needed and plan.changes["policy"]:
                plan.actions += self._log_changes(self.applier.policy.converge(work.policy))
            if plan.changes["nftables"]:
                try:
                    self._apply_nft(work)
                except NftError as exc:
                    nft_error = exc
                    plan.nft_error = str(exc)
                    self.fw_log.error("nftables transaction refused; previous table kept", error=str(exc))
            if not work.policy.needed and plan.changes["policy"]:
                plan.actions += self._log_changes(self.applier.policy.converge(work.policy))
            if plan.changes["interfaces"]:
                resolved = [s for s in work.specs if s.service_id not in plan.errors]
                kept = [s.name for s in work.specs if s.service_id in plan.errors]
                changes, errors = self.applier.interfaces.converge(resolved, keep=kept)
                plan.actions += self._log_changes(changes)
                plan.errors.update(errors)
                plan.temporary = bool(set(errors) & self.applier.interfaces.retryable)
            for service_id, error in sorted(plan.errors.items()):
                self.net_log.error("service interface failed", service_id=service_id, error=error)
            changes, record = sysctl.converge_sysctls(work.sysctls, self.applier.sysctls, work.record)
            plan.actions += self._log_changes(changes)
            self.state.write_json(SYSCTL_RECORD, record)
            if self.netplan_path is not None and replace_private_file(self.netplan_path, plan.interfaces):
                plan.actions += self._log_changes([f"wrote {self.netplan_path}"])
            plan.interface_status = self._statuses(work.specs, plan.errors)
            plan.applied = True
            if plan.changed and nft_error is None and not plan.errors:
                plan.unconverged = self._self_check(desired)
            self.last_plan = plan
            if nft_error is not None:
                raise nft_error
            return plan

    def teardown(self) -> Plan:
        """Remove everything Arctic owns here: table, rules, routes, interfaces, DHCP clients; restore sysctls."""
        with self._lock:
            plan = self.apply(empty())
            self.applier.interfaces.dhcp.stop_all()
            for name in (NFT_APPLIED, NFT_READBACK, SYSCTL_RECORD):
                self.state.delete(name)
            if self.netplan_path is not None and self.netplan_path.exists():
                self.netplan_path.unlink()
                plan.actions += self._log_changes([f"removed {self.netplan_path}"])
            return plan

    def status(self, desired: DesiredState) -> list[InterfaceStatus]:
        """Name, MAC and actual addresses of this peer's service interfaces, read from the kernel."""
        with self._lock:
            specs = self._resolve(interface_specs(desired), desired.lan_interface, {})
            return self._statuses(specs, {})

    def _self_check(self, desired: DesiredState) -> list[str]:
        """The convergence self-check: right after an apply, a second plan must be empty. Returns (and logs under
        ``netmgr``) the sections it still changes: a kernel that does not keep what it was given, or a renderer and
        a reader that disagree; either way the next run would apply it again."""
        again = self._plan(desired).plan
        sections = [name for name, changed in again.changes.items() if changed]
        for name in sections:
            self.net_log.warning("not converged: a second plan right after applying still changes a section",
                                 section=name, drift=again.drift, diff=again.diff[:2000])
        return sections

    # --- planning -----------------------------------------------------------------------------------------------

    def _plan(self, desired: DesiredState) -> _Work:
        ruleset = rs.build_ruleset(desired)  # validates desired first: bad input raises before any kernel read
        table_text = rs.render_table(ruleset)
        drift: list[str] = []

        current = self.applier.nft.list_table() or ""
        applied, readback = self.state.read(NFT_APPLIED), self.state.read(NFT_READBACK)
        if applied is not None and current == (readback or ""):
            nft_before = applied
        else:
            nft_before = current
            if applied is None and current:
                drift.append("nftables: table inet arctic exists but this agent has no record of applying it;"
                             " it will be replaced")
            elif applied is not None and not current:
                drift.append("nftables: table inet arctic was deleted outside Arctic")
            elif applied is not None:
                drift.append("nftables: table inet arctic was changed outside Arctic")
        nft_changed = nft_before != table_text or bool(drift)

        pspec = policy_spec(desired)
        pstate = self.applier.policy.read()
        errors: dict[str, str] = {}
        specs = self._resolve(interface_specs(desired), desired.lan_interface, errors)
        wanted = sysctl.desired_sysctls(desired, [s.name for s in specs if s.service_id not in errors])
        record = self.state.read_json(SYSCTL_RECORD, {})
        current_sysctls = {k: self.applier.sysctls.read(k) for k in wanted}
        policy_before = "".join(f"{ln}\n" for ln in pstate.lines() + sysctl.lines(current_sysctls))
        policy_after = "".join(f"{ln}\n" for ln in spec_lines(pspec) + sysctl.lines(wanted))
        # Entries of a family the host cannot do (IPv6 disabled) and no service requires are not "missing".
        skip = self.applier.policy.unavailable_families - set(pspec.required_families)
        wanted_entries: list[RuleEntry | LocalRoute] = [*pspec.rules, *pspec.routes]
        want_entries = {e for e in wanted_entries if e.family not in skip}
        have_entries: set[RuleEntry | LocalRoute] = set(pstate.rules) | set(pstate.routes)
        policy_changed = (want_entries != have_entries
                          or any(current_sysctls[k] != v for k, v in wanted.items())
                          or any(k not in wanted for k in record))

        observed = self.applier.interfaces.observe()
        interfaces_before = render_netplan([_spec_from_observed(o) for o in observed.values()])
        interfaces_after = render_netplan(specs)
        drift += self._interface_drift(specs, observed)
        if applied and want_entries - have_entries:
            drift.append("policy routing: " + "; ".join(sorted(e.text() for e in want_entries - have_entries))
                         + " missing")
        interfaces_changed = (interfaces_before != interfaces_after or bool(errors)
                              or any(d.startswith("interface") for d in drift))

        diff = "".join([
            unified("nftables", nft_before, table_text),
            unified("policy-routing", policy_before, policy_after),
            unified("interfaces (netplan)", interfaces_before, interfaces_after),
        ])
        plan = Plan(nftables=table_text, nft_script=rs.render_script(ruleset), policy=policy_after,
                    interfaces=interfaces_after, diff=diff,
                    changes={"nftables": nft_changed, "policy": policy_changed, "interfaces": interfaces_changed},
                    drift=drift, errors=errors)
        return _Work(plan, ruleset, pspec, specs, wanted, record)

    def _known_conflicts(self, desired: DesiredState) -> dict[str, str]:
        """Address conflicts the last apply found, for services still wanted: a dry run must not probe the LAN,
        but it should say why an address it shows as missing is missing."""
        known = self.applier.interfaces.conflicts
        wanted = {s.id for s in desired.interface_services()}
        return {sid: msg for sid, msg in known.items() if sid in wanted}

    def _resolve(self, specs: list[InterfaceSpec], lan_interface: str | None,
                 errors: dict[str, str]) -> list[InterfaceSpec]:
        out = []
        for spec in specs:
            try:
                parent = self.applier.interfaces.resolve_parent(spec, lan_interface)
            except InterfaceError as exc:
                errors[spec.service_id] = str(exc)
                parent = None
            out.append(InterfaceSpec(spec.service_id, spec.name, spec.mac, spec.ipv4, spec.ipv6, parent))
        return out

    def _interface_drift(self, specs: list[InterfaceSpec], observed: dict[str, ObservedInterface]) -> list[str]:
        drift = []
        for spec in specs:
            obs = observed.get(spec.name)
            if obs is None:
                continue  # not created yet, or deleted: the netplan diff shows it
            if not obs.up:
                drift.append(f"interface {spec.name}: link is down")
            if spec.dhcp4 and not self.applier.interfaces.dhcp.running(spec.name):
                drift.append(f"interface {spec.name}: DHCP client is not running")
        return drift

    # --- applying -----------------------------------------------------------------------------------------------

    def _apply_nft(self, work: _Work) -> None:
        ruleset = work.ruleset
        started = time.monotonic()
        self.applier.nft.apply(work.plan.nft_script)
        readback = self.applier.nft.list_table() or ""
        elapsed = time.monotonic() - started
        self.state.write(NFT_APPLIED, work.plan.nftables)
        self.state.write(NFT_READBACK, readback)
        work.plan.nft_seconds = elapsed
        if ruleset.present:
            action = f"nft: table inet arctic replaced ({ruleset.route_count} routes in {len(ruleset.rules)} rules" \
                     f" and {len(ruleset.sets)} sets)"
            self.fw_log.info("nftables table replaced", routes=ruleset.route_count, rules=len(ruleset.rules),
                             sets=len(ruleset.sets), shadowed=len(ruleset.shadowed),
                             transparent_services=len(ruleset.transparent_services), seconds=round(elapsed, 3))
        else:
            action = "nft: table inet arctic deleted"
            self.fw_log.info("nftables table deleted", seconds=round(elapsed, 3))
        work.plan.actions.append(action)

    def _log_changes(self, changes: list[str]) -> list[str]:
        for change in changes:
            self.net_log.info("applied", change=change)
        return changes

    def _log_drift(self, plan: Plan) -> None:
        for item in plan.drift:
            (self.fw_log if item.startswith("nftables") else self.net_log).warning("drift found; repairing",
                                                                                    drift=item)

    def _statuses(self, specs: list[InterfaceSpec], errors: dict[str, str]) -> list[InterfaceStatus]:
        if not specs:
            return []
        observed = self.applier.interfaces.observe()
        return [self.applier.interfaces.status(s, errors.get(s.service_id), observed) for s in specs]


def _spec_from_observed(obs: ObservedInterface) -> InterfaceSpec:
    static = sorted(obs.static())
    v4 = [a for a in static if ":" not in a]
    v6 = [a for a in static if ":" in a]
    return InterfaceSpec(obs.service_id, obs.name, obs.mac or "", v4[0] if v4 else None, v6[0] if v6 else None,
                         obs.parent)
