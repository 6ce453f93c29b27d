"""The rules that keep the lab inside the lab.

Every address, route and gateway the harness configures passes through here first, so a typo such as
``192.168.1.1/24`` (a real home LAN) is refused before any kernel state changes; and lab tests check with
``root_namespace_untouched`` that the root namespace looks the same after them as before.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
from collections.abc import Iterator

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

LAB_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "198.18.0.0/15",  # links between peers (RFC 2544 benchmarking range)
        "10.0.0.0/8",  # client LANs, only ever inside lab namespaces
        "192.168.100.0/24",
        "192.168.200.0/24",
        "172.31.0.0/16",
        "fd00::/8",
    )
)
_ALLOWED_TEXT = ", ".join(str(n) for n in LAB_NETWORKS)

# Roles become part of namespace names and interface names (IFNAMSIZ is 16 including the NUL), so they stay short.
_ROLE = re.compile(r"^[a-z][a-z0-9-]{0,10}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")


class LabSafetyError(ValueError):
    """The harness refused to configure something that could leave the lab; nothing was changed."""


def _inside_lab(network: IPNetwork) -> bool:
    return any(network.version == lab.version and network.subnet_of(lab) for lab in LAB_NETWORKS)


def lab_interface(text: str) -> IPInterface:
    """Parse an interface address such as ``198.18.0.1/24``; its whole network must lie in a lab range."""
    try:
        iface = ipaddress.ip_interface(str(text).strip())
    except ValueError as exc:
        raise LabSafetyError(f"{text!r} is not an address like 198.18.0.1/24: {exc}") from None
    if not _inside_lab(iface.network):
        raise LabSafetyError(
            f"refusing address {text!r}: network {iface.network} is outside the lab ranges ({_ALLOWED_TEXT})"
        )
    return iface


def lab_network(text: str) -> IPNetwork:
    """Parse a route destination; it must lie in a lab range (use ``Lab.default_via`` for a default route)."""
    try:
        net = ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as exc:
        raise LabSafetyError(f"{text!r} is not a network like 192.168.100.0/24: {exc}") from None
    if not _inside_lab(net):
        raise LabSafetyError(
            f"refusing route to {text!r}: it is outside the lab ranges ({_ALLOWED_TEXT}); "
            "default routes only via Lab.default_via(host, gateway)"
        )
    return net


def lab_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse a single address (gateway, advertised agent address); it must lie in a lab range."""
    try:
        addr = ipaddress.ip_address(str(text).strip().strip("[]"))
    except ValueError as exc:
        raise LabSafetyError(f"{text!r} is not an IP address: {exc}") from None
    if not _inside_lab(ipaddress.ip_network(addr)):
        raise LabSafetyError(f"refusing address {text!r}: it is outside the lab ranges ({_ALLOWED_TEXT})")
    return addr


def check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE.match(role):
        raise LabSafetyError(
            f"role {role!r} must be 1-11 characters of a-z, 0-9 and '-', starting with a letter "
            "(it becomes part of namespace and interface names)"
        )
    return role


def check_ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise LabSafetyError(f"interface name {name!r} must be 1-15 characters of A-Z a-z 0-9 . _ -")
    return name


def root_namespace_state() -> dict[str, str]:
    """What Arctic or the lab could change in the root namespace (read-only commands; nothing is sent)."""
    def out(*argv: str) -> str:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30).stdout

    links = sorted(line.split(":")[1].strip().split("@")[0] for line in out("ip", "-o", "link").splitlines())
    return {"nft tables": out("nft", "list", "tables"), "ip rule": out("ip", "rule"),
            "ip -6 rule": out("ip", "-6", "rule"), "links": " ".join(links),
            "table 61080": out("ip", "route", "show", "table", "61080"), "tc qdisc": out("tc", "qdisc", "show")}


@contextlib.contextmanager
def root_namespace_untouched(during: str) -> Iterator[None]:
    """Assert that the root namespace's rules, tables, links and qdiscs are the same after ``during`` as before."""
    before = root_namespace_state()
    yield
    after = root_namespace_state()
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"the root namespace changed during {during}: {', '.join(changed)}"
