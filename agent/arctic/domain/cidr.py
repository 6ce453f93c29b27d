"""Strict CIDR parsing with messages an operator can act on.

Route CIDRs are *networks*: ``10.1.2.3/8`` is refused and the message names ``10.0.0.0/8``
(seed: "Network address must match the mask"). Service interface addresses are the opposite:
``192.168.100.10/24`` is a host address with its prefix.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class CidrError(ValueError):
    """The text is not acceptable; ``str(err)`` is the operator message."""


def slash_hint(text: str) -> str:
    """What to type instead of a bare address: the seed's network form first (an operator who typed 10.0.0.0
    usually meant 10.0.0.0/8), then the one-address form."""
    if ":" in text:
        return f"a network such as fd00::/64, or {text}/128 for this one address"
    return f"a network such as 10.0.0.0/8, or {text}/32 for this one address"


def parse_network(text: object, field: str) -> Network:
    """Parse a route CIDR in slash notation whose address is the network address."""
    if not isinstance(text, str) or not text.strip():
        raise CidrError(f"{field} must be a CIDR string such as 10.0.0.0/8")
    text = text.strip()
    if "/" not in text:
        raise CidrError(f"{field} {text!r} needs slash notation: {slash_hint(text)}")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise CidrError(f"{field} {text!r} is not valid CIDR notation (expected e.g. 10.0.0.0/8)") from None
    raise CidrError(
        f"{field} {text!r} has host bits set: the network address must match the mask, use {loose}"
    )


def parse_interface(text: object, field: str, version: int) -> Interface:
    """Parse an interface address such as ``192.168.100.10/24`` (IPv4 or IPv6 as ``version`` says)."""
    example = "192.168.100.10/24" if version == 4 else "fd00::10/64"
    if not isinstance(text, str) or "/" not in text:
        raise CidrError(f"{field} must be an address with prefix length, e.g. {example}")
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise CidrError(f"{field} {text!r} is not a valid address/prefix (e.g. {example})") from None
    if iface.version != version:
        raise CidrError(f"{field} {text!r} is not an IPv{version} address (e.g. {example})")
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        raise CidrError(
            f"{field} {text!r} is the network or broadcast address of {net}; pick a host address"
        )
    return iface
