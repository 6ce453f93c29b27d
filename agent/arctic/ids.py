"""Typed ULID identifiers (``peer_01H...``, ``svc_01H...``).

The product's newer docs emit prefixed ids and older examples use bare ULIDs, so we always emit the
prefixed form and accept either on input (``parse_id``).
"""

from __future__ import annotations

from ulid import ULID

KINDS = ("peer", "svc", "clu", "lic", "cli", "cust")


def new_id(kind: str) -> str:
    """Return a fresh, time-ordered id of ``kind`` (one of ``KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown id kind {kind!r}")
    return f"{kind}_{ULID()}"


def parse_id(kind: str, text: str) -> str | None:
    """Normalise ``text`` to the prefixed form of ``kind``; None when it is not such an id.

    Accepts ``svc_01H...`` and the bare ``01H...`` form (case-insensitive ULID).
    """
    if not isinstance(text, str):
        return None
    body = text[len(kind) + 1 :] if text.startswith(kind + "_") else text
    try:
        return f"{kind}_{ULID.from_str(body.upper())}"
    except ValueError:
        return None
