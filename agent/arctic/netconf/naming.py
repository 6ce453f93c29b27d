"""Stable names for what Arctic creates per service: interface name and MAC address.

Both derive from a hash of the service id, so they survive agent restarts and re-creation: the same service
always gets the same ``arcXXXXXXXXXX`` link and the same MAC, hence the same DHCP lease.
"""

from __future__ import annotations

import hashlib
import re

from .constants import IFNAME_HASH_CHARS, IFNAME_PREFIX

_OWNED_NAME = re.compile(rf"^{IFNAME_PREFIX}[0-9a-f]{{{IFNAME_HASH_CHARS}}}$")


def interface_name(service_id: str) -> str:
    """``arc`` + 10 hex digits (13 characters, within IFNAMSIZ 15)."""
    digest = hashlib.blake2s(service_id.encode(), digest_size=8, person=b"arcifn").hexdigest()
    return IFNAME_PREFIX + digest[:IFNAME_HASH_CHARS]


def interface_mac(service_id: str) -> str:
    """A locally administered unicast MAC (first octet 0x02 bit set, 0x01 bit clear) unique to the service."""
    raw = bytearray(hashlib.blake2s(service_id.encode(), digest_size=6, person=b"arcmac").digest())
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def is_owned_name(name: str) -> bool:
    return bool(_OWNED_NAME.match(name or ""))
