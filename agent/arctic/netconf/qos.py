"""Per-service bandwidth limits (``bandwidth_limit_mbps``) as HTB shaping, in both directions (subsystem ``qosmgr``).

Where shaping happens
    Each peer shapes what it *sends*: the source peer shapes source->target data on the interface that routes the
    target peer's tunnel address, the target peer shapes target->source data on the interface towards the source.
    Together that limits both directions of a service, each to ``bandwidth_limit_mbps``.

How traffic is classified
    The data plane sets ``SO_PRIORITY`` on each tunnel socket to one of the service's slot priorities
    (``QosManager.slot_priorities``), choosing a free or least-used slot per connection. HTB puts a packet straight
    into the leaf whose classid equals ``skb->priority``. Traffic of no service (priority 0, or any value that names
    no Arctic leaf) goes to HTB's direct queue (``default 0``), which is never rate limited; with no limited service
    on an interface, the root qdisc is removed altogether, so unlimited traffic pays nothing.

Token bucket and burst (documented limit)
    A service class has rate = ceil = the limit, and burst = cburst = max(16 KiB, 2 ms at the limit), for example
    16 KiB at 10-50 Mbit/s, 25 kB at 100 Mbit/s, 250 kB at 1 Gbit/s. After an idle period a service may send at
    most that many bytes above its rate (plus the one packet being dequeued, up to 64 KiB with GSO); after that the
    rate holds. 2 ms is the smallest burst at which HTB stays accurate at Gbit rates on this kernel.

Fair queuing between a service's flows
    This kernel has no fq_codel/fq/sfq, so fairness comes from structure: every service has 16 flow slots (HTB
    leaves with rate = limit/16, ceil = limit, equal prio), and HTB's deficit round robin shares the limit between
    busy slots. The quantum is max(72 KiB, 1 ms of the limit), at most 128 KiB: at least one whole GSO packet, or
    the round robin would share packets instead of bytes. When the kernel does have a fair qdisc, it becomes each
    slot's leaf qdisc (fq_codel preferred; the choice is logged once); otherwise each slot has a bfifo of 50 ms of
    the limit (256 KiB to 8 MiB). Connections beyond 16 share slots.

Live changes
    A new limit is ``tc class change`` on the service class and its slots: queues and connections stay. ``0`` removes
    the service's classes (its traffic falls through to the direct queue at once); deleting the service does the
    same. A root qdisc Arctic did not install (anything but the kernel default or Arctic's ``61:``) is never replaced:
    that interface is refused with a logged error and the others are still shaped.

Atomicity
    Each interface gets one ``tc -batch`` built in full before anything runs. If tc rejects a line, the interface is
    restored (root removed and, if Arctic had shaping there before, re-created as it was read from the kernel) and a
    ``QosError`` names the failure.

Everything runs in the network namespace of the calling thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arctic.logs import get_logger

from .qos_kernel import TcKernel, describe, detect_leaf_qdisc, is_default, is_ours
from .qos_model import (
    BLOCK,
    DEFAULT_SLOTS,
    MAX_SLOTS,
    ROOT_HANDLE,
    QosError,
    QosService,
    allocate_class_bases,
    check_interface,
    check_rate,
    check_service_id,
    classid,
    priority_of,
    slot_minors,
)
from .qos_render import (
    HtbClass,
    LeafQdisc,
    TcPlan,
    plan_changes,
    plan_full,
    plan_rebuild,
    render_plan,
    render_qos,
    service_classes,
)

__all__ = [
    "QosError", "QosManager", "QosService", "ServiceLink", "allocate_class_bases", "group_by_interface", "qos_text",
    "render_qos",
]

log = get_logger("qosmgr")


@dataclass(frozen=True)
class ServiceLink:
    """A service as the reconciler sees it: the other peer's tunnel address and the limit (0 = unlimited)."""

    service_id: str
    peer_address: str
    rate_mbps: int


def group_by_interface(links: Iterable[ServiceLink], kernel: TcKernel | None = None, *,
                       unrouted: dict[str, QosError] | None = None) -> dict[str, dict[str, int]]:
    """``apply()``'s input: each service under the interface that routes its other peer (``ip route get``, once per
    address). With ``unrouted``, a service whose peer has no route is left out and its error recorded there (one
    bad peer never blocks the others); without, the first such error is raised."""
    kernel = kernel or TcKernel()
    by_dev: dict[str, dict[str, int]] = {}
    dev_of: dict[str, str | QosError] = {}
    for link in links:
        if link.peer_address not in dev_of:
            try:
                dev_of[link.peer_address] = kernel.route_dev(link.peer_address)
            except QosError as err:
                dev_of[link.peer_address] = err
        dev = dev_of[link.peer_address]
        if isinstance(dev, QosError):
            if unrouted is None:
                raise dev
            unrouted[link.service_id] = dev
            continue
        by_dev.setdefault(dev, {})[link.service_id] = link.rate_mbps
    return by_dev


def qos_text(links: Iterable[ServiceLink]) -> str:
    """Shaping as reviewable lines, one per limited service (the tc details are ``qos_render``'s); the form
    ``QosManager.installed_text`` reads back from the kernel, so the two diff line by line."""
    return "".join(_shape_line(link.service_id, link.peer_address, f"{link.rate_mbps}")
                   for link in sorted(links, key=lambda x: x.service_id) if link.rate_mbps > 0)


def _shape_line(service: str, towards: str, mbit: str, note: str = "") -> str:
    return f"shape {service} towards {towards}: {mbit} Mbit/s each way{note}\n"


def _mbit(bps: int) -> str:
    return f"{bps // 1_000_000}" if bps % 1_000_000 == 0 else f"{bps / 1_000_000:.3f}"


class QosManager:
    """Keeps this namespace's interfaces shaped as desired; remembers class blocks so slot priorities never move."""

    def __init__(self, *, slots: int = DEFAULT_SLOTS, kernel: TcKernel | None = None,
                 leaf: LeafQdisc | None = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise QosError(f"slots must be an integer from 1 to {MAX_SLOTS}, got {slots!r}")
        self.slots = slots
        self._kernel = kernel or TcKernel()
        self._leaf = leaf
        self._bases: dict[str, int] = {}
        self._lock = threading.RLock()

    @property
    def leaf(self) -> LeafQdisc:
        if self._leaf is None:
            self._leaf = detect_leaf_qdisc()
        return self._leaf

    # --- what the data plane needs ---------------------------------------------------------------------------

    def slot_priorities(self, service_id: str) -> list[int]:
        """SO_PRIORITY values for the service's tunnel sockets ([] for a service this manager was never given).

        Known services get their priorities even while unlimited: those name no class and are not shaped, but a
        limit set later then applies to connections that are already open.
        """
        with self._lock:
            base = self._bases.get(service_id)
            return [] if base is None else [priority_of(m) for m in slot_minors(base, self.slots)]

    def priorities(self) -> dict[str, list[int]]:
        with self._lock:
            return {sid: self.slot_priorities(sid) for sid in sorted(self._bases)}

    def drops(self) -> dict[str, int]:
        """Packets dropped by each service's classes on every interface Arctic shapes (for ``/metrics``).

        Read from the kernel when asked; a service this manager never shaped has no entry. A failing read of one
        interface leaves its services out rather than failing the whole answer.
        """
        with self._lock:
            bases = dict(self._bases)
        owner = {minor: sid for sid, base in bases.items() for minor in (base, *slot_minors(base, self.slots))}
        totals: dict[str, int] = {}
        try:
            roots = self._kernel.root_qdiscs()
        except QosError:
            return totals
        for dev in sorted(dev for dev, qdisc in roots.items() if is_ours(qdisc)):
            try:
                by_minor = self._kernel.class_drops(dev)
            except QosError:
                continue
            for minor, count in by_minor.items():
                if minor in owner:
                    totals[owner[minor]] = totals.get(owner[minor], 0) + count
        return totals

    def installed_text(self, links: Iterable[ServiceLink]) -> str:
        """The shaping installed in this namespace now, read from the kernel, in ``qos_text``'s form.

        ``links`` name the services (and their other peers) whose class blocks to look for; a block of no such
        service is shown by its class id. A service's line carries the rate of its service class as installed, and
        says so when its other classes (flow slots, ceilings, quanta) are not the ones that rate renders to, so a
        class changed by hand shows in a diff against ``qos_text`` of the desired links. Raises ``QosError``.
        """
        links = list(links)
        with self._lock:
            known = dict(self._bases)
            bases = allocate_class_bases({link.service_id for link in links}, keep=known)
        owner = {base: sid for sid, base in known.items()} | {base: sid for sid, base in bases.items()}
        towards = {link.service_id: link.peer_address for link in links}
        lines: list[tuple[str, str]] = []
        roots = self._kernel.root_qdiscs()
        for dev in sorted(dev for dev, qdisc in roots.items() if is_ours(qdisc)):
            blocks: dict[int, list[HtbClass]] = {}
            for cls in self._kernel.htb_classes(dev):
                blocks.setdefault(cls.minor - cls.minor % BLOCK, []).append(cls)
            for base, classes in sorted(blocks.items()):
                sid = owner.get(base)
                top = next((c for c in classes if c.minor == base and c.parent_minor is None), None)
                name = sid or f"(class block {classid(base)} of no service)"
                where = towards.get(sid, f"? (via {dev})") if sid else dev
                if top is None:
                    line = f"shape {name} towards {where}: no service class, {len(classes)} slot classes left\n"
                else:
                    line = _shape_line(name, where, _mbit(top.rate_bps), self._class_note(sid, base, top, classes))
                lines.append((sid or f"~{base:08x}", line))
        return "".join(line for _, line in sorted(lines))

    def _class_note(self, sid: str | None, base: int, top: HtbClass | None, classes: list[HtbClass]) -> str:
        """`` (N tc classes differ ...)`` when the block is not what its service class's rate renders to."""
        if sid is None or top is None or top.rate_bps % 1_000_000:
            return ""
        rendered = {c.minor: c for c in service_classes(QosService(sid, top.rate_bps // 1_000_000, base,
                                                                   self.slots))}
        have = {c.minor: c for c in classes}
        differ = sum(1 for m in rendered.keys() | have.keys()
                     if m not in rendered or m not in have or not rendered[m].same_settings(have[m]))
        return f" ({differ} tc classes differ from the rendered ones)" if differ else ""

    # --- reconciling -----------------------------------------------------------------------------------------

    def apply(self, desired_by_interface: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        """Make shaping match ``{interface: {service_id: rate_mbps}}`` (rate 0 = unlimited, no class).

        Pass every service that involves this peer, limited or not, so each keeps a stable class block. Interfaces
        that carry Arctic's root but are no longer wanted are cleaned. Returns a per-interface summary of changes.
        Bad input raises ``QosError`` before anything changes; kernel failures on one interface are rolled back
        there, the other interfaces are still reconciled, and one ``QosError`` lists every failure.
        """
        desired = self._validated(desired_by_interface)
        with self._lock:
            ids = {sid for services in desired.values() for sid in services}
            bases = allocate_class_bases(ids, keep=self._bases)
            self._bases = bases
            roots = self._kernel.root_qdiscs()
            wanted = {dev for dev, services in desired.items() if any(rate > 0 for rate in services.values())}
            todo = sorted(set(desired) | {dev for dev, q in roots.items() if is_ours(q)})
            summary: dict[str, dict[str, int]] = {}
            errors: list[QosError] = []
            for dev in todo:
                services = [QosService(sid, rate, bases[sid], self.slots)
                            for sid, rate in sorted(desired.get(dev, {}).items())]
                try:
                    plan = self._apply_interface(dev, services, roots.get(dev), dev in wanted)
                except QosError as err:
                    log.error(f"shaping not applied on {dev}: {err}", interface=dev)
                    errors.append(QosError(f"{dev}: {err}", temporary=err.temporary))
                    continue
                if plan is not None and not plan.empty:
                    summary[dev] = plan.summary()
            if errors:
                raise QosError("; ".join(map(str, errors)), temporary=any(e.temporary for e in errors))
            return summary

    def teardown(self) -> list[str]:
        """Remove Arctic's root qdisc from every interface of this namespace; returns the interfaces cleaned."""
        with self._lock:
            cleaned = []
            for dev, qdisc in sorted(self._kernel.root_qdiscs().items()):
                if is_ours(qdisc):
                    self._kernel.delete_root(dev)
                    cleaned.append(dev)
            if cleaned:
                log.info("shaping removed", interfaces=cleaned)
            return cleaned

    # --- internals -------------------------------------------------------------------------------------------

    @staticmethod
    def _validated(desired: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        if not isinstance(desired, Mapping):
            raise QosError("desired shaping must map interface names to {service_id: rate_mbps}")
        out: dict[str, dict[str, int]] = {}
        for dev, services in desired.items():
            check_interface(dev)
            if not isinstance(services, Mapping):
                raise QosError(f"{dev}: services must map service ids to rates in Mbps")
            for sid, rate in services.items():
                check_service_id(sid)
                check_rate(rate, sid)
            out[dev] = dict(services)
        return out

    def _apply_interface(self, dev: str, services: list[QosService], root: dict[str, Any] | None,
                         wanted: bool) -> TcPlan | None:
        if root is None:
            if wanted:
                raise QosError(f"interface {dev} does not exist in this namespace")
            return None
        if is_ours(root):
            installed = self._kernel.htb_classes(dev)
            leaves = self._kernel.leaf_qdiscs(dev)
            plan = plan_changes(dev, installed, leaves, services, self.leaf)

            def restore() -> None:
                self._kernel.delete_root(dev)
                text = render_plan(plan_rebuild(dev, installed, leaves))
                if text:
                    self._kernel.run_batch(text)
        elif not wanted:
            return None  # not ours and nothing to shape: never touch it
        elif is_default(root):
            plan = plan_full(dev, services, self.leaf)

            def restore() -> None:
                current = self._kernel.root_qdiscs().get(dev)
                if is_ours(current):
                    self._kernel.delete_root(dev)
        else:
            raise QosError(f"interface {dev} already has a root qdisc ({describe(root)}) that Arctic did not "
                           f"install; refusing to replace it. Remove it, or route the peer over another interface; "
                           f"Arctic only manages its own root {ROOT_HANDLE}")
        text = render_plan(plan)
        if not text:
            return plan
        try:
            self._kernel.run_batch(text)
        except QosError as err:
            try:
                restore()
            except QosError as undo:
                raise QosError(f"{err}; restoring the previous shaping also failed: {undo}",
                               temporary=err.temporary) from err
            raise QosError(f"{err} (the previous shaping of {dev} was restored)", temporary=err.temporary) from err
        log.info(f"shaping applied on {dev}", interface=dev, limited=[s.service_id for s in services if s.limited],
                 **plan.summary())
        return plan


# --- python -m arctic.netconf.qos: inspect or apply by hand (inside the namespace you mean) ------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arctic.netconf.qos",
                                     description="Render or apply Arctic's per-service shaping in this namespace.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("render", "apply"):
        p = sub.add_parser(name, help=f"{name} shaping for JSON {{interface: {{service_id: rate_mbps}}}}")
        p.add_argument("desired", help='e.g. \'{"eth0": {"svc_01H...": 50}}\'')
        p.add_argument("--slots", type=int, default=DEFAULT_SLOTS)
    sub.add_parser("teardown", help="remove Arctic's root qdisc from every interface")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "teardown":
            print(json.dumps({"cleaned": QosManager(leaf=LeafQdisc("bfifo")).teardown()}))
            return 0
        desired = json.loads(args.desired)
        manager = QosManager(slots=args.slots)
        if args.cmd == "render":
            bases = allocate_class_bases({sid for s in desired.values() for sid in s})
            for dev, services in desired.items():
                sys.stdout.write(render_qos(dev, [QosService(sid, rate, bases[sid], args.slots)
                                                  for sid, rate in services.items()], leaf=manager.leaf))
            return 0
        summary = manager.apply(desired)
        print(json.dumps({"applied": summary, "priorities": manager.priorities()}))
        return 0
    except (QosError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
