"""The kernel settings interception needs, applied in the caller's network namespace and recorded.

* ``net.ipv4.ip_forward=1`` (and the IPv6 twin when IPv6 routes are intercepted): the source peer is the
  clients' next hop, so everything Arctic does not intercept must still be forwarded.
* ``rp_filter=2`` (loose) on every service interface: the MACVLAN shares its subnet with its parent, so the
  reverse-path lookup for replies arriving on it points at the parent and strict mode would drop them. The
  effective value is max(conf.all, conf.<iface>), so loose on the interface wins even when ``all`` is strict.

Each value we change is recorded with the value it had before; when no service needs it any more, it is put
back — but only if it still holds our value (someone who changed it since then keeps their choice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import RP_FILTER_LOOSE
from .desired import DesiredState, route_family

if TYPE_CHECKING:
    from .ports import SysctlsPort

PROC_SYS = Path("/proc/sys")


def desired_sysctls(desired: DesiredState, interface_names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    families = {route_family(r) for r in desired.intercepted_routes()}
    if 4 in families:
        out["net.ipv4.ip_forward"] = "1"
    if 6 in families:
        out["net.ipv6.conf.all.forwarding"] = "1"
    for name in sorted(interface_names):
        out[f"net.ipv4.conf.{name}.rp_filter"] = RP_FILTER_LOOSE
    return out


def sysctl_path(name: str, root: Path = PROC_SYS) -> Path:
    """Dotted name -> /proc/sys path; the interface part of ``net.ipv4.conf.<if>.x`` may itself contain dots."""
    parts = name.split(".")
    if len(parts) > 5 and parts[:3] in (["net", "ipv4", "conf"], ["net", "ipv6", "conf"]):
        parts = parts[:3] + [".".join(parts[3:-1]), parts[-1]]
    return root.joinpath(*parts)


class Sysctls:
    def __init__(self, root: Path = PROC_SYS) -> None:
        self.root = root

    def read(self, name: str) -> str | None:
        try:
            return sysctl_path(name, self.root).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, name: str, value: str) -> None:
        sysctl_path(name, self.root).write_text(f"{value}\n")


def converge_sysctls(wanted: dict[str, str], sysctls: SysctlsPort,
                     record: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Apply ``wanted``; restore recorded values no longer wanted. Returns (changes, new record)."""
    changes: list[str] = []
    new_record = dict(record)
    for name, value in wanted.items():
        current = sysctls.read(name)
        if current is None:
            continue  # e.g. the interface is not there (yet); the next reconcile retries
        if current != value:
            sysctls.write(name, value)
            changes.append(f"sysctl -w {name}={value}")
            new_record.setdefault(name, {"before": current, "applied": value})
            new_record[name]["applied"] = value
        else:
            new_record.setdefault(name, {"before": None, "applied": value})  # already so: nothing to restore
    for name in list(new_record):
        if name in wanted:
            continue
        entry = new_record.pop(name)
        before, applied = entry.get("before"), entry.get("applied")
        current = sysctls.read(name)
        if before is not None and current is not None and current == applied and before != applied:
            sysctls.write(name, before)
            changes.append(f"sysctl -w {name}={before}")
    return changes, new_record


def lines(values: Mapping[str, str | None]) -> list[str]:
    return [f"sysctl -w {k}={v}" for k, v in sorted(values.items()) if v is not None]
