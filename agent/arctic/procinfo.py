"""Facts about a process by pid, from /proc: enough to never signal a recycled pid.

A pid alone is not an identity (the kernel reuses pids); pid + start time is. Every place that records a child
process (data plane, DHCP clients, lab harness) stores both and checks both before it sends a signal.
"""

from __future__ import annotations

from pathlib import Path


def process_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of a live, non-zombie ``pid``; None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_cmdline(pid: int) -> list[str]:
    """The process's argv ([] when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_same_process(pid: int, start_time: object, *argv_parts: str) -> bool:
    """``pid`` is still the process we recorded: same start time, and its argv names every one of ``argv_parts``."""
    if process_start_time(pid) != start_time:
        return False
    argv = process_cmdline(pid)
    return all(part in argv for part in argv_parts)
