"""API scopes: the seven URNs, their short forms, and what a set of held scopes grants.

Operators type short forms (``services.read``); the API stores and puts into tokens only the URN form,
so comparisons never depend on how a scope was spelled. A write scope does not imply the matching
read scope (the reference product lists them separately); ``admin`` grants everything.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "urn:tillered:arctic:"

ADMIN = PREFIX + "admin"
PEERS_READ = PREFIX + "peers.read"
PEERS_WRITE = PREFIX + "peers.write"
SERVICES_READ = PREFIX + "services.read"
SERVICES_WRITE = PREFIX + "services.write"
CREDENTIALS_READ = PREFIX + "credentials.read"
CREDENTIALS_WRITE = PREFIX + "credentials.write"

SCOPES = [ADMIN, PEERS_READ, PEERS_WRITE, SERVICES_READ, SERVICES_WRITE, CREDENTIALS_READ, CREDENTIALS_WRITE]

DESCRIPTIONS = {
    ADMIN: "full access",
    PEERS_READ: "list and get peers",
    PEERS_WRITE: "add, update and delete peers",
    SERVICES_READ: "read services and routes",
    SERVICES_WRITE: "create, update and delete services and routes",
    CREDENTIALS_READ: "list credentials",
    CREDENTIALS_WRITE: "create, revoke and rotate credentials",
}


def short_form(scope: str) -> str:
    """``urn:tillered:arctic:peers.read`` -> ``peers.read`` (for display)."""
    return scope[len(PREFIX):] if scope.startswith(PREFIX) else scope


def normalise_scope(text: str) -> str:
    """The URN for a scope in short or URN form; ``ValueError`` names the bad value and the valid ones."""
    if isinstance(text, str):
        candidate = text.strip()
        urn = candidate if candidate.startswith(PREFIX) else PREFIX + candidate
        if urn in SCOPES:
            return urn
    valid = ", ".join(short_form(s) for s in SCOPES)
    raise ValueError(f"invalid scope {text!r}: use one of {valid} (or the full form {PREFIX}<name>)")


def normalise_scopes(scopes: Iterable[str]) -> list[str]:
    """URN forms of ``scopes`` in order, duplicates dropped. ``ValueError`` names the first bad one."""
    if isinstance(scopes, str) or scopes is None:
        raise ValueError(f"scopes must be a list of scope names, got {scopes!r}")
    return list(dict.fromkeys(normalise_scope(s) for s in scopes))


def grants(held: Iterable[str], needed: str) -> bool:
    """True when the scopes ``held`` (any form; unknown ones ignored) allow an operation needing ``needed``.

    Raises ``ValueError`` when ``needed`` itself is not a scope (a programming error, not a refusal).
    """
    urns = set()
    for scope in held:
        try:
            urns.add(normalise_scope(scope))
        except ValueError:
            continue
    return ADMIN in urns or normalise_scope(needed) in urns
