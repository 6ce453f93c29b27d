"""Netplan YAML for the service interfaces: the persistent, human-readable description of what ``interfaces``
manages (also the "interfaces" section of a reconcile plan's diff).

Writing it is optional (the reconciler's ``netplan_path``, written with ``arctic.fileutil.replace_private_file``):
only hosts whose network is managed by netplan want the file, and the agent never runs ``netplan apply`` itself
(that would reconfigure the whole host).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import templating
from .interfaces import InterfaceSpec

TEMPLATE = "netplan.yaml.j2"


def render_netplan(specs: Sequence[InterfaceSpec]) -> str:
    return templating.render(TEMPLATE, interfaces=sorted(specs, key=lambda s: s.name))
