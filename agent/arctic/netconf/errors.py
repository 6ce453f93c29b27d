"""Errors of the kernel-state layer. Each message says what is wrong and what to do about it."""

from __future__ import annotations


class NetconfError(RuntimeError):
    """Base class: something in desired state or in the kernel prevents reconciling."""


class DesiredStateError(NetconfError, ValueError):
    """The desired state cannot be rendered (bad CIDR, mixed families, unsafe name). Nothing was changed."""


class NftError(NetconfError):
    """``nft`` refused a transaction; the kernel keeps the previous table (transactions are atomic)."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class PolicyRoutingError(NetconfError):
    """An ``ip rule`` / ``ip route`` change failed."""


class InterfaceError(NetconfError):
    """A service interface could not be created or changed; no partial state was left behind."""

    def __init__(self, message: str, *, service_id: str | None = None) -> None:
        super().__init__(message)
        self.service_id = service_id


class AddressConflict(InterfaceError):
    """A desired static address is already used by another host (or another interface of this one).

    The address was not assigned. Unlike other interface errors the MACVLAN itself stays (up, without that
    address): it holds nothing that can collide, and the next reconcile run probes again from it instead of
    re-creating it. ``changes`` lists what was done before the conflict was found.
    """

    def __init__(self, message: str, *, service_id: str | None = None, changes: list[str] | None = None) -> None:
        super().__init__(message, service_id=service_id)
        self.changes = list(changes or [])
