"""The ``nft`` command: apply one transaction from stdin, list our table, check a script without applying it.

The CLI (not libnftables bindings) is used because it is on every host that has nftables and because the text
it accepts is exactly the text we render and show to operators. Runs in the caller's network namespace.
"""

from __future__ import annotations

import shutil
import subprocess

from .constants import NFT_FAMILY, NFT_TABLE
from .errors import NftError


class Nftables:
    def __init__(self, binary: str | None = None, timeout: float = 60.0) -> None:
        self.binary = binary or shutil.which("nft") or "/usr/sbin/nft"
        self.timeout = timeout

    def _run(self, args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.binary, *args], input=script, capture_output=True, text=True,
                                  timeout=self.timeout)
        except FileNotFoundError:
            raise NftError(f"nft not found at {self.binary}: install the nftables package") from None
        except subprocess.TimeoutExpired:
            raise NftError(f"nft {' '.join(args)} did not finish within {self.timeout:.0f}s") from None

    def apply(self, script: str) -> None:
        """Run ``script`` as one transaction; on error the kernel keeps exactly what it had."""
        proc = self._run(["-f", "-"], script)
        if proc.returncode != 0:
            raise NftError(f"nft refused the {NFT_FAMILY} {NFT_TABLE} transaction (nothing changed): "
                           f"{_first_error(proc.stderr)}", proc.stderr)

    def check(self, script: str) -> str | None:
        """``nft -c``: None if the kernel would accept ``script``, else the error text."""
        proc = self._run(["-c", "-f", "-"], script)
        return None if proc.returncode == 0 else _first_error(proc.stderr)

    def list_table(self) -> str | None:
        """``nft list table inet arctic`` as text, or None when the table does not exist."""
        proc = self._run(["list", "table", NFT_FAMILY, NFT_TABLE])
        if proc.returncode == 0:
            return proc.stdout
        if "No such file or directory" in proc.stderr:
            return None
        raise NftError(f"nft list table {NFT_FAMILY} {NFT_TABLE} failed: {_first_error(proc.stderr)}", proc.stderr)


def _first_error(stderr: str) -> str:
    """The error line plus the offending input line, without nft's caret art, kept short for logs."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
    return " | ".join(lines[:2])[:600] or "no error text"
