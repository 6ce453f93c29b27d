"""A dry run of this peer: every section rendered for a view of the store, and diffed, never applied.

``preview`` renders what a reconcile run would produce (nftables, policy routing, interfaces through
``Reconciler.plan``; shaping; the data-plane config) and diffs each section against what is applied, given as
text read from the kernel (``QosManager.installed_text``) and from the config file on disk. ``compare`` diffs two
renderings where nothing is applied (an agent that does not manage its kernel). ``GET``/``POST /v1/plan`` and the
reconcile worker call these; the rendering itself is ``rendering.py``, the diff format ``textdiff.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from arctic.config import AgentConfig

from . import rendering
from .qos import qos_text
from .reconciler import Plan, Reconciler
from .textdiff import unified


@dataclass
class Preview:
    """Everything a run would produce, rendered but not applied, and its diff against what is applied."""

    plan: Plan
    qos: str
    dataplane: dict[str, Any]
    diff: str
    qos_changed: bool
    dataplane_changed: bool

    @property
    def changed(self) -> bool:
        return self.plan.changed or self.qos_changed or self.dataplane_changed

    def to_dict(self) -> dict[str, Any]:
        return {"nftables": self.plan.nftables, "policy": self.plan.policy, "interfaces": self.plan.interfaces,
                "qos": self.qos, "dataplane": self.dataplane, "diff": self.diff, "changed": self.changed,
                "changes": dict(self.plan.changes) | {"qos": self.qos_changed, "dataplane": self.dataplane_changed},
                "drift": self.plan.drift, "interface_errors": self.plan.errors, "nft_error": self.plan.nft_error}


def dataplane_text(doc: dict[str, Any] | None) -> str:
    """The data-plane config exactly as the worker writes it (and as a diff shows it)."""
    return "" if doc is None else json.dumps(doc, indent=1, sort_keys=True) + "\n"


def preview(reconciler: Reconciler, view: rendering.LocalView, config: AgentConfig, *,
            priorities: dict[str, list[int]], bind_addresses: dict[str, str | None], qos_before: str,
            dataplane_before: dict[str, Any] | None, proxied_connections: bool = False,
            qos_drift: list[str] | None = None) -> Preview:
    """Render ``view`` for this peer and diff it against what is applied. Raises ``DesiredStateError``.

    ``qos_before``: the shaping installed now, in ``qos_text`` form; ``qos_drift``: how it differs from what
    Arctic last applied (shown with the other sections' drift)."""
    plan = reconciler.plan(rendering.desired_state(view, config, proxied_connections=proxied_connections))
    plan.drift += qos_drift or []
    qos = qos_text(rendering.qos_links(view))
    doc = rendering.dataplane_config(view, config, priorities=priorities, bind_addresses=bind_addresses)
    qos_diff = unified("qos", qos_before, qos)
    dataplane_diff = unified("dataplane", dataplane_text(dataplane_before), dataplane_text(doc))
    return Preview(plan, qos, doc, plan.diff + qos_diff + dataplane_diff, bool(qos_diff), bool(dataplane_diff))


def compare(before: Preview, after: Preview) -> str:
    """Unified diff between two renderings (used where nothing is applied to compare with)."""
    sections = (("nftables", before.plan.nftables, after.plan.nftables),
                ("policy-routing", before.plan.policy, after.plan.policy),
                ("interfaces (netplan)", before.plan.interfaces, after.plan.interfaces),
                ("qos", before.qos, after.qos),
                ("dataplane", dataplane_text(before.dataplane), dataplane_text(after.dataplane)))
    return "".join(unified(name, old, new) for name, old, new in sections)
