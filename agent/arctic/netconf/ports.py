"""What the reconciler needs from a kernel: one typed port per section (``KernelApplier``).

``LinuxKernel`` (``applier.py``) implements it on the host (in the caller's network namespace); ``offline.py``
implements it as a kernel with nothing in it (dry runs on agents that do not manage the kernel); the unit tests
implement it in memory. The reconciler knows only these protocols.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .interfaces import InterfaceSpec, InterfaceStatus, ObservedInterface
from .policy import PolicySpec, PolicyState


class NftPort(Protocol):
    """``table inet arctic``: listed as text, checked and replaced in one atomic transaction."""

    def list_table(self) -> str | None: ...

    def check(self, script: str) -> str | None: ...

    def apply(self, script: str) -> None: ...


class PolicyPort(Protocol):
    """The ``ip rule`` / ``ip route`` entries of Arctic's routing table."""

    unavailable_families: set[int]  # families the kernel refused (e.g. IPv6 disabled)

    def read(self) -> PolicyState: ...

    def converge(self, spec: PolicySpec) -> list[str]: ...


class DhcpPort(Protocol):
    def running(self, ifname: str) -> bool: ...

    def stop_all(self) -> None: ...


class InterfacesPort(Protocol):
    """Service interfaces (MACVLAN, addresses, DHCP clients)."""

    conflicts: dict[str, str]  # service id -> why its static address was not assigned (last apply)
    retryable: set[str]  # service ids whose interface failed on a kernel call in the last converge (temporary)

    @property
    def dhcp(self) -> DhcpPort: ...

    def observe(self) -> dict[str, ObservedInterface]: ...

    def resolve_parent(self, spec: InterfaceSpec, lan_interface: str | None) -> str: ...

    def converge(self, specs: Iterable[InterfaceSpec],
                 keep: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]: ...

    def status(self, spec: InterfaceSpec, error: str | None = None,
               observed: dict[str, ObservedInterface] | None = None) -> InterfaceStatus: ...


class SysctlsPort(Protocol):
    def read(self, name: str) -> str | None: ...

    def write(self, name: str, value: str) -> None: ...


class KernelApplier(Protocol):
    """Everything ``Reconciler`` reads and changes, section by section."""

    @property
    def nft(self) -> NftPort: ...

    @property
    def policy(self) -> PolicyPort: ...

    @property
    def interfaces(self) -> InterfacesPort: ...

    @property
    def sysctls(self) -> SysctlsPort: ...
