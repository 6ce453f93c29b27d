"""``LinuxKernel``: the ``KernelApplier`` (``ports.py``) that touches this host's kernel: nft, policy routing,
sysctls and service interfaces.

Everything acts on the network namespace of the calling thread (subprocesses inherit it, netlink sockets and
/proc/sys lookups use it), which is how the lab tests run a real applier inside a namespace.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..logs import get_logger
from .dhcp import DhcpSupervisor
from .interfaces import InterfaceManager, _iproute
from .nft import Nftables
from .policy import PolicyRouting
from .sysctl import PROC_SYS, Sysctls


class LinuxKernel:
    """The host's kernel, section by section (implements ``ports.KernelApplier``)."""

    def __init__(self, *, dhcp_dir: Path | None = None, nft_binary: str | None = None,
                 iproute_factory: Callable[[], Any] = _iproute, sysctl_root: Path = PROC_SYS,
                 warn_log: Any = None) -> None:
        """``dhcp_dir``: where DHCP clients keep pid, lease and log files (use the agent's state dir so they
        survive restarts); ``warn_log``: where best-effort failures are reported (default: ``netmgr``)."""
        run_dir = Path(dhcp_dir) if dhcp_dir is not None else Path(tempfile.mkdtemp(prefix="arctic-dhcp-"))
        self.nft = Nftables(nft_binary)
        self.policy = PolicyRouting(iproute_factory, log=warn_log or get_logger("netmgr"))
        self.sysctls = Sysctls(sysctl_root)
        self.interfaces = InterfaceManager(DhcpSupervisor(run_dir), iproute_factory=iproute_factory,
                                           sysctls=self.sysctls)
