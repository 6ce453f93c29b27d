"""Errors of the kernel-state layer. Each message says what is wrong and what to do about it."""

from __future__ import annotations


class NetconfError(RuntimeError):
    """Base class: something in desired state or in the kernel prevents reconciling.

    ``temporary`` says how the reconcile worker treats it: True (the default, for a failed ``nft`` or netlink
    call: a busy lock, a kernel that said no this time) -> try again soon, with back-off; False (the input
    itself is refused) -> report it and wait for a change, since the same input fails the same way.
    """

    temporary: bool = True


class DesiredStateError(NetconfError, ValueError):
    """The desired state cannot be rendered (bad CIDR, mixed families, unsafe name). Nothing was changed.
    Permanent: retrying the same input cannot help."""

    temporary = False


class NftError(NetconfError):
    """``nft`` refused a transaction; the kernel keeps the previous table (transactions are atomic).

    Temporary: the script is rendered from validated input, so a refusal is the kernel's at that moment (a
    transaction lost to another writer, memory, a module still loading), and the worker retries with back-off.
    """

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class PolicyRoutingError(NetconfError):
    """An ``ip rule`` / ``ip route`` change failed."""


class InterfaceError(NetconfError):
    """A service interface could not be created or changed; no partial state was left behind."""

    def __init__(self, message: str, *, service_id: str | None = None, temporary: bool | None = None) -> None:
        super().__init__(message)
        self.service_id = service_id
        if temporary is not None:  # else the class says: a failed netlink call is temporary, a conflict is not
            self.temporary = temporary


class AddressConflict(InterfaceError):
    """A desired static address is already used by another host (or another interface of this one). Permanent
    until that host lets go of it: the periodic runs probe again.

    The address was not assigned. Unlike other interface errors the MACVLAN itself stays (up, without that
    address): it holds nothing that can collide, and the next reconcile run probes again from it instead of
    re-creating it. ``changes`` lists what was done before the conflict was found.
    """

    temporary = False

    def __init__(self, message: str, *, service_id: str | None = None, changes: list[str] | None = None) -> None:
        super().__init__(message, service_id=service_id)
        self.changes = list(changes or [])
