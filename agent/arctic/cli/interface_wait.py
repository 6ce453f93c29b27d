"""``arctic services create --requires-interface`` waits for the interface the target peer creates.

``POST /v1/services`` answers as soon as the service is stored; its MACVLAN is made moments later by the TARGET
peer's reconciler, and a DHCP address later still. An operator who asked for an interface wants its name, MAC and
address, so ``create`` polls ``GET /v1/services/{id}`` (which asks the target: ``arctic.api.observations``) until
the target reports the interface usable (``interface_state: up``), failed (``error``) or never coming
(``unmanaged``), or until the timeout. While it waits, ``interface_detail`` says why it is not usable yet.

No outcome of the wait fails the command: the service WAS created, and exiting non-zero would invite a script to
create it again. A timeout or an interface error is reported on stderr and the exit status stays 0; with ``-j``
stdout is only the service as last read, whose ``interface_state`` says where the interface stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arctic.cli.client import ApiClient
from arctic.cli.errors import ApiCallError, CliError

POLL_INTERVAL = 0.5  # seconds between two reads: a bounded poll of a remote system
DEFAULT_TIMEOUT: float = 30  # seconds (an int, so --help shows "30")
# Tests replace both (and POLL_INTERVAL), so no test waits on a real clock.
CLOCK: Callable[[], float] = time.monotonic
SLEEP: Callable[[float], None] = time.sleep

NOT_RECEIVED = "the agent answering has not received the service yet (replication is under way)"


@dataclass(frozen=True)
class Progress:
    """Where the interface stands, in the words the CLI reports it with."""

    finished: bool  # nothing more to wait for: usable, failed, or never coming
    ready: bool
    waiting_for: str  # "<target> to create the service interface" | "a DHCP lease on <name>"
    why: str | None = None


def uses_dhcp(svc: dict[str, Any]) -> bool:
    """Without a desired IPv4 address the target runs a DHCP client for the interface."""
    return not svc.get("desired_ipv4_cidr")


def facts_complete(svc: dict[str, Any]) -> bool:
    """Name, MAC and every address it should have: what an agent without ``interface_state`` can tell."""
    wanted = ["interface_name", "interface_mac"]
    if svc.get("desired_ipv4_cidr") or uses_dhcp(svc):
        wanted.append("interface_ipv4_cidr")
    if svc.get("desired_ipv6_cidr"):
        wanted.append("interface_ipv6_cidr")
    return all(svc.get(key) for key in wanted)


def progress(svc: dict[str, Any], target: str) -> Progress:
    """Judge one read of the service; ``target`` names the target peer in messages."""
    state, detail = svc.get("interface_state"), svc.get("interface_detail")
    if state in ("error", "unmanaged"):
        return Progress(True, False, f"{target} to create the service interface", detail)
    if state == "up" or (state is None and facts_complete(svc)):
        return Progress(True, True, "")
    if state == "waiting_for_lease" or (state is None and svc.get("interface_name") and uses_dhcp(svc)):
        return Progress(False, False, f"a DHCP lease on {svc.get('interface_name') or 'the service interface'}",
                        detail or "the target peer has not recorded a lease yet")
    return Progress(False, False, f"{target} to create the service interface",
                    detail or "the target peer has not reported the interface yet")


def read_service(client: ApiClient, svc: dict[str, Any]) -> dict[str, Any]:
    """The service as the agent shows it now; a 404 is an agent that has not received it yet, not a failure."""
    try:
        return client.get(f"/v1/services/{svc['id']}")
    except ApiCallError as err:
        if err.status != 404:
            raise
        return {**svc, "interface_state": "pending", "interface_detail": NOT_RECEIVED}


def wait_for_interface(client: ApiClient, svc: dict[str, Any], *, timeout: float,
                       target: str) -> tuple[dict[str, Any], Progress]:
    """Read the service until its interface is finished or ``timeout`` seconds have passed (at least one read).

    Returns the last read and its progress. A read that fails (other than 404) raises ``CliError``.
    """
    deadline = CLOCK() + timeout
    while True:
        svc = read_service(client, svc)
        state = progress(svc, target)
        left = deadline - CLOCK()
        if state.finished or left <= 0:
            return svc, state
        SLEEP(min(POLL_INTERVAL, left))


def ready_line(svc: dict[str, Any], target: str) -> str:
    """``Interface arc5c9c39c375 on agent-b: MAC 6e:18:6c:53:66:ff, IPv4 192.168.100.10/24``."""
    parts = [f"MAC {svc.get('interface_mac')}"]
    parts += [f"{label} {svc[key]}" for label, key in (("IPv4", "interface_ipv4_cidr"), ("IPv6", "interface_ipv6_cidr"))
              if svc.get(key)]
    return f"Interface {svc.get('interface_name')} on {target}: {', '.join(parts)}"


def outcome_notice(svc: dict[str, Any], state: Progress, *, timeout: float, target: str) -> str | None:
    """What stderr says when the wait did not end with a usable interface (None when it did)."""
    check = f"The service was created; check on it with: arctic services get {svc.get('id')}"
    kind = svc.get("interface_state")
    if state.ready:
        return None
    if kind == "error":
        return (f"Warning: the service interface on {target} has an error: {state.why}\n"
                f"{check} (the target retries at every reconcile run; fix the cause or delete the service)")
    if kind == "unmanaged":
        return f"Warning: {target} will not create the service interface: {state.why}\n{check}"
    return f"Still waiting for {state.waiting_for} after {timeout:g} s: {state.why}\n{check}"


def watch_failed_notice(svc: dict[str, Any], err: CliError) -> str:
    """The service exists but could not be read back: say so, without failing the create."""
    return (f"Warning: cannot follow the service interface: {err.message}\n"
            f"The service was created; check on it with: arctic services get {svc.get('id')}")
