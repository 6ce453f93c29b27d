"""A kernel with nothing in it, behind the same ``KernelApplier`` ports as the real one.

An agent with ``apply_kernel: false`` still answers dry runs: ``offline_reconciler()`` plans against this empty
kernel, so it never reads or changes the host's network state. Nothing here can apply anything: the writing
methods refuse, which is what a dry run must never reach.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import NetconfError
from .interfaces import InterfaceSpec, InterfaceStatus, ObservedInterface
from .policy import PolicySpec, PolicyState
from .reconciler import Reconciler


def _refuse(what: str) -> NetconfError:
    return NetconfError(f"{what}: this agent does not manage its kernel (apply_kernel: false)")


class EmptyNft:
    def list_table(self) -> str | None:
        return None

    def check(self, script: str) -> str | None:
        return None

    def apply(self, script: str) -> None:
        raise _refuse("nft")


class EmptyPolicy:
    def __init__(self) -> None:
        self.unavailable_families: set[int] = set()

    def read(self) -> PolicyState:
        return PolicyState((), ())

    def converge(self, spec: PolicySpec) -> list[str]:
        raise _refuse("policy routing")


class NoDhcp:
    def running(self, ifname: str) -> bool:
        return False

    def stop_all(self) -> None:
        """No DHCP client ever runs here."""


class EmptyInterfaces:
    def __init__(self) -> None:
        self.dhcp = NoDhcp()
        self.conflicts: dict[str, str] = {}
        self.retryable: set[str] = set()

    def observe(self) -> dict[str, ObservedInterface]:
        return {}

    def resolve_parent(self, spec: InterfaceSpec, lan_interface: str | None) -> str:
        return lan_interface or "(parent chosen when applied)"

    def converge(self, specs: Iterable[InterfaceSpec],
                 keep: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
        raise _refuse("service interfaces")

    def status(self, spec: InterfaceSpec, error: str | None = None,
               observed: dict[str, ObservedInterface] | None = None) -> InterfaceStatus:
        return InterfaceStatus(spec.service_id, spec.name, spec.parent, None, None, None, "missing", spec.dhcp4)


class EmptySysctls:
    def read(self, name: str) -> str | None:
        return None

    def write(self, name: str, value: str) -> None:
        raise _refuse("sysctl")


class EmptyKernel:
    """``ports.KernelApplier`` for a kernel that has nothing of Arctic's and must not be changed."""

    def __init__(self) -> None:
        self.nft = EmptyNft()
        self.policy = EmptyPolicy()
        self.interfaces = EmptyInterfaces()
        self.sysctls = EmptySysctls()


def offline_reconciler() -> Reconciler:
    """A reconciler for ``plan`` only, against an empty kernel (``apply_kernel: false``)."""
    return Reconciler(EmptyKernel())
