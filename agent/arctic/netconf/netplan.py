"""Netplan YAML for the service interfaces: the persistent, human-readable description of what ``interfaces``
manages (also the "interfaces" section of a reconcile plan's diff).

Writing it is optional (``write_netplan``): only hosts whose network is managed by netplan want the file, and the
agent never runs ``netplan apply`` itself (that would reconfigure the whole host).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import templating
from .interfaces import InterfaceSpec

TEMPLATE = "netplan.yaml.j2"


def render_netplan(specs: Sequence[InterfaceSpec]) -> str:
    return templating.render(TEMPLATE, interfaces=sorted(specs, key=lambda s: s.name))


def write_netplan(path: Path, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` (mode 0600, as netplan requires); False if already identical."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
