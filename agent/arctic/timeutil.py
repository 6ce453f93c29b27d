"""One place for time: aware UTC ``now``, RFC 3339 on the wire, a readable form for the CLI.

Everything the agent stores or sends is an aware UTC datetime rendered as ``2026-01-01T00:00:00Z``.
Naive datetimes are refused rather than guessed at: a silently local-time timestamp would shift a
licence expiry or a credential grace period by hours.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 section 5.6 (``T`` or, as its note allows, a space between date and time; offset required).
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def _require_aware(dt: datetime) -> datetime:
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"refusing naive datetime {dt.isoformat()}: give it a timezone (UTC)")
    return dt.astimezone(UTC)


def to_rfc3339(dt: datetime) -> str:
    """``2026-01-01T00:00:00Z`` (UTC, whole seconds: the precision licences and records use)."""
    return _require_aware(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or ``+hh:mm`` offset) into an aware UTC datetime.

    Raises ``ValueError`` naming the bad value and the expected form.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 timestamp string like 2026-01-01T00:00:00Z, got {text!r}")
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(
            f"invalid timestamp {text!r}: expected RFC 3339 like 2026-01-01T00:00:00Z "
            "or 2026-01-01T02:00:00+02:00"
        )
    frac = (match["frac"] or "")[:6].ljust(6, "0")  # datetime keeps microseconds; extra digits are dropped
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}{offset}")
    except ValueError as err:
        raise ValueError(f"invalid timestamp {text!r}: {err}") from None
    return parsed.astimezone(UTC)


def to_cli(dt: datetime) -> str:
    """``2026-01-01 00:00:00 UTC``: what the CLI and operator tools print."""
    return _require_aware(dt).strftime("%Y-%m-%d %H:%M:%S UTC")
