"""The one way a kernel section's text is compared: a unified diff, applied -> desired, headed by the section's name.

Every section (nftables, policy routing, interfaces, shaping, the data-plane config) uses it, in the reconciler's
plan, in a preview and in a comparison of two renderings, so an operator reads one diff format everywhere.
"""

from __future__ import annotations

import difflib


def unified(name: str, before: str, after: str, *, old: str = "applied", new: str = "desired") -> str:
    """``""`` when equal, else the unified diff ``a/<name> (<old>)`` -> ``b/<name> (<new>)``."""
    if before == after:
        return ""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{name} ({old})", tofile=f"b/{name} ({new})"))
