"""Desired shaping -> a plan of tc operations -> ``tc -batch`` text rendered from ``templates/tc/``.

Everything here is pure: the plan is computed from plain data (the desired services and, for an update, the
classes already installed), so unit tests can read the exact text the kernel would get.

Two kinds of plan:

* ``plan_full``: build an interface's shaping from nothing (root qdisc, then every class and leaf qdisc);
* ``plan_changes``: move installed classes to the desired ones with ``class change`` (a live rate change keeps
  queues and connections), ``class add`` for new services or slots and ``class del`` for removed ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import templating
from .qos_model import (
    ROOT_HANDLE,
    QosError,
    QosService,
    burst_bytes,
    check_interface,
    classid,
    leaf_queue_bytes,
    quantum_bytes,
    slot_rate_bps,
)

TEMPLATE = "tc/qos.tc.j2"
SLOT_PRIO = 0


@dataclass(frozen=True)
class LeafQdisc:
    """The qdisc under each flow slot: a fair queue when the kernel has one, else a byte-bounded FIFO."""

    kind: str

    def options(self, rate_bps: int) -> str:
        if self.kind == "bfifo":
            return f"limit {leaf_queue_bytes(rate_bps)}"
        if self.kind == "pfifo":
            return "limit 100"
        return ""  # fq_codel, fq, sfq: their defaults are sound for a leaf


BFIFO = LeafQdisc("bfifo")


@dataclass(frozen=True)
class HtbClass:
    """One HTB class as Arctic wants it (or as it is installed); rates in bit/s, sizes in bytes."""

    minor: int
    parent_minor: int | None  # None: directly under the root qdisc
    rate_bps: int
    ceil_bps: int
    burst: int
    quantum: int
    prio: int | None = None

    @property
    def classid(self) -> str:
        return classid(self.minor)

    @property
    def parent(self) -> str:
        return ROOT_HANDLE if self.parent_minor is None else classid(self.parent_minor)

    def same_settings(self, other: HtbClass) -> bool:
        """Equal as far as the kernel reports (rates in bytes/s; burst is derived from the rate, so not compared)."""
        return (self.parent_minor == other.parent_minor and self.rate_bps // 8 == other.rate_bps // 8
                and self.ceil_bps // 8 == other.ceil_bps // 8 and self.quantum == other.quantum
                and (self.prio or 0) == (other.prio or 0))


@dataclass(frozen=True)
class ClassOp:
    verb: str  # add | change | del
    cls: HtbClass
    comment: str = ""


@dataclass(frozen=True)
class LeafOp:
    parent_minor: int
    kind: str
    options: str

    @property
    def parent(self) -> str:
        return classid(self.parent_minor)


@dataclass
class TcPlan:
    interface: str
    add_root: bool = False
    delete_root: bool = False
    deletes: list[ClassOp] = field(default_factory=list)
    upserts: list[ClassOp] = field(default_factory=list)
    leaves: list[LeafOp] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.add_root or self.delete_root or self.deletes or self.upserts or self.leaves)

    def summary(self) -> dict[str, int]:
        count = {"add": 0, "change": 0, "del": len(self.deletes)}
        for op in self.upserts:
            count[op.verb] += 1
        return {"classes_added": count["add"], "classes_changed": count["change"],
                "classes_deleted": count["del"], "leaf_qdiscs": len(self.leaves)}


# --- desired classes ---------------------------------------------------------------------------------------------

def service_classes(service: QosService) -> list[HtbClass]:
    """The service class first, then its slot leaves (the order tc needs to add them)."""
    rate = service.rate_bps
    burst, quantum = burst_bytes(rate), quantum_bytes(rate)
    top = HtbClass(service.classid_minor_base, None, rate, rate, burst, quantum)
    leaves = [HtbClass(m, service.classid_minor_base, slot_rate_bps(rate, service.slots), rate, burst, quantum,
                       SLOT_PRIO) for m in service.slot_minors]
    return [top, *leaves]


def _limited(services: Iterable[QosService]) -> list[QosService]:
    chosen = sorted((s for s in services if s.limited), key=lambda s: s.classid_minor_base)
    seen: dict[int, str] = {}
    for s in chosen:
        if s.classid_minor_base in seen:
            raise QosError(f"services {seen[s.classid_minor_base]} and {s.service_id} were given the same class "
                           f"block {classid(s.classid_minor_base)}; allocate bases with allocate_class_bases()")
        seen[s.classid_minor_base] = s.service_id
    return chosen


def plan_full(interface: str, services: Sequence[QosService], leaf: LeafQdisc = BFIFO) -> TcPlan:
    """Build shaping on an interface that has no Arctic root yet (nothing at all when no service is limited)."""
    check_interface(interface)
    plan = TcPlan(interface)
    limited = _limited(services)
    if not limited:
        return plan
    plan.add_root = True
    for s in limited:
        for i, cls in enumerate(service_classes(s)):
            plan.upserts.append(ClassOp("add", cls, _comment(s) if i == 0 else ""))
            if cls.parent_minor is not None:
                plan.leaves.append(LeafOp(cls.minor, leaf.kind, leaf.options(s.rate_bps)))
    return plan


@dataclass(frozen=True)
class InstalledLeaf:
    kind: str
    options: dict


def plan_changes(interface: str, installed: Sequence[HtbClass], installed_leaves: dict[int, InstalledLeaf],
                 services: Sequence[QosService], leaf: LeafQdisc = BFIFO) -> TcPlan:
    """Move an interface that already has Arctic's root to the desired services, touching only what differs.

    ``installed`` are the classes under ``61:`` now; ``installed_leaves`` maps a class minor to its child qdisc.
    With no limited service left the plan deletes the root qdisc instead (the interface returns to its default).
    """
    check_interface(interface)
    plan = TcPlan(interface)
    limited = _limited(services)
    if not limited:
        plan.delete_root = True
        return plan
    have = {c.minor: c for c in installed}
    want: dict[int, tuple[HtbClass, QosService]] = {}
    for s in limited:
        for cls in service_classes(s):
            want[cls.minor] = (cls, s)
    # Deletions: unwanted classes, and classes whose parent changed (HTB cannot re-parent). Leaves before parents.
    doomed = [c for m, c in have.items() if m not in want or want[m][0].parent_minor != c.parent_minor]
    doomed_minors = {c.minor for c in doomed}
    doomed += [c for c in installed if c.parent_minor in doomed_minors and c.minor not in doomed_minors]
    for c in sorted(doomed, key=lambda c: (c.parent_minor is None, c.minor)):
        plan.deletes.append(ClassOp("del", c))
    gone = {c.minor for c in doomed}
    for s in limited:
        for i, cls in enumerate(service_classes(s)):
            old = None if cls.minor in gone else have.get(cls.minor)
            comment = _comment(s) if i == 0 else ""
            if old is None:
                plan.upserts.append(ClassOp("add", cls, comment))
            elif not cls.same_settings(old):
                plan.upserts.append(ClassOp("change", cls, comment))
            if cls.parent_minor is None:
                continue
            options = leaf.options(s.rate_bps)
            current = None if old is None else installed_leaves.get(cls.minor)
            if current is None or not _leaf_matches(current, leaf.kind, options):
                plan.leaves.append(LeafOp(cls.minor, leaf.kind, options))
    return plan


def plan_rebuild(interface: str, installed: Sequence[HtbClass], installed_leaves: dict[int, InstalledLeaf]) -> TcPlan:
    """Re-create classes as they were read from the kernel (the undo of a failed change; bursts are recomputed)."""
    check_interface(interface)
    plan = TcPlan(interface, add_root=bool(installed))
    for c in sorted(installed, key=lambda c: (c.parent_minor is not None, c.minor)):
        plan.upserts.append(ClassOp("add", HtbClass(c.minor, c.parent_minor, c.rate_bps, c.ceil_bps,
                                                    burst_bytes(c.ceil_bps), c.quantum, c.prio)))
        leaf = installed_leaves.get(c.minor)
        if leaf is not None and c.parent_minor is not None:
            options = " ".join(f"{k} {v}" for k, v in leaf.options.items() if k == "limit")
            plan.leaves.append(LeafOp(c.minor, leaf.kind, options))
    return plan


def _leaf_matches(current: InstalledLeaf, kind: str, options: str) -> bool:
    if current.kind != kind:
        return False
    if kind in ("bfifo", "pfifo"):
        return f"limit {current.options.get('limit')}" == options
    return True


def _comment(s: QosService) -> str:
    return f"service {s.service_id}: {s.rate_mbps} Mbit/s, {s.slots} flow slots"


# --- text --------------------------------------------------------------------------------------------------------

def render_plan(plan: TcPlan) -> str:
    """``tc -batch`` text for a plan ("" when there is nothing to do)."""
    if plan.empty:
        return ""
    return templating.render(TEMPLATE, plan=plan, dev=plan.interface, root=ROOT_HANDLE)


def render_qos(interface: str, services: Sequence[QosService], *, leaf: LeafQdisc = BFIFO) -> str:
    """The complete shaping of one interface as ``tc -batch`` text (empty when no service is limited).

    Services with ``rate_mbps == 0`` are unlimited and get no class at all.
    """
    return render_plan(plan_full(interface, services, leaf))
