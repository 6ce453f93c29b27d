"""Writing the files the agent owns: whole or not at all, private, and only when the content changes.

A reader (netplan, the data plane watching its config) must never see half a file, and an unchanged file must
keep its mtime so "changed" can trigger a reload and nothing else does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_private_file(path: str | Path, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` (mode 0600 from the start); False if it already had that text."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
