"""What the reconciler last applied, kept in the agent's state directory (or in memory when there is none).

Recording the applied nft text together with the kernel's own listing right after applying lets the next
reconcile tell "unchanged" from "someone edited or deleted our table" without caring how a given nft version
formats its output.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StateStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, str] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def read(self, name: str) -> str | None:
        if self.directory is None:
            return self._memory.get(name)
        try:
            return (self.directory / name).read_text()
        except FileNotFoundError:
            return None

    def write(self, name: str, text: str) -> None:
        if self.directory is None:
            self._memory[name] = text
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, self.directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, name: str) -> None:
        if self.directory is None:
            self._memory.pop(name, None)
        else:
            (self.directory / name).unlink(missing_ok=True)

    def read_json(self, name: str, default: Any) -> Any:
        text = self.read(name)
        if text is None:
            return default
        try:
            return json.loads(text)
        except ValueError:
            return default

    def write_json(self, name: str, value: Any) -> None:
        self.write(name, json.dumps(value, indent=2, sort_keys=True) + "\n")
