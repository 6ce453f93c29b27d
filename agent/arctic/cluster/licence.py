"""Signed licence documents: issuing, verifying, and the expiry state machine.

A licence is a JSON object signed with an issuer's Ed25519 key. The signature covers the canonical
JSON (sorted keys, no whitespace, UTF-8) of every field except ``signature``, so fields this version
does not know about are still protected and are kept verbatim in ``Licence.raw``. Agents trust any
of the issuer keys in their configuration (``license.issuer_public_keys``), which lets an issuer
rotate keys without re-issuing every licence at once.

Expiry does not stop a cluster at once: after ``expires_at`` come a fully operational grace period,
then a read-only period (traffic and reads continue, changes are blocked), then suspension.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arctic.cluster.identity import (
    IdentityError,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_b64,
    public_key_to_b64,
    verify_signature,
)
from arctic.ids import new_id
from arctic.timeutil import parse_rfc3339, to_cli, to_rfc3339, utcnow

# Expiry state machine (DESIGN.md / reference notes §4.5).
WARNING_WINDOW = timedelta(days=30)  # "warning" this close to expiry
GRACE_PERIOD = timedelta(days=14)  # after expiry: fully operational
READ_ONLY_PERIOD = timedelta(days=30)  # after grace: reads and data plane only; then suspended

DEFAULT_FEATURES = ("tcp", "kcp", "qos", "transparent")
REQUIRED_FIELDS = ("customer_id", "license_id", "issued_at", "expires_at", "max_nodes", "max_services")

INVALID = "LICENSE_INVALID"
EXPIRED = "LICENSE_EXPIRED"

_CUSTOMER_ID = re.compile(r"^cust_[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LICENSE_ID = re.compile(r"^lic_[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_FEATURE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class LicenceError(Exception):
    """A licence was refused. ``code`` is the API error code, ``message`` tells the operator what to fix."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Licence:
    customer_id: str
    license_id: str
    issued_at: datetime
    expires_at: datetime
    max_nodes: int
    max_services: int
    features: tuple[str, ...]
    raw: dict[str, Any] = field(hash=False, repr=False)  # the signed document as received, with signature


@dataclass(frozen=True)
class LicenceState:
    """Where a licence stands at a moment, and what that allows.

    ``days_remaining`` counts days (a started day counts) until the next loss of capability: expiry
    (valid, warning), the end of grace (grace), suspension (read_only); 0 when suspended.
    ``changes_at`` is that moment.
    """

    name: str  # valid | warning | grace | read_only | suspended
    days_remaining: int
    message: str
    allows_writes: bool
    allows_api: bool
    data_plane_enabled: bool
    changes_at: datetime | None = None


# -- signing ------------------------------------------------------------------------------------

def canonical_bytes(doc: dict[str, Any]) -> bytes:
    """The bytes the signature covers: every field but ``signature``, canonical JSON, UTF-8."""
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def generate_issuer_key() -> tuple[bytes, str]:
    """A new issuer key pair: (private key as PKCS8 PEM, public key as base64 of the raw 32 bytes)."""
    key = Ed25519PrivateKey.generate()
    return private_key_to_pem(key), public_key_to_b64(key.public_key())


def _as_datetime(value: datetime | str, name: str) -> datetime:
    if isinstance(value, str):
        return parse_rfc3339(value)
    if isinstance(value, datetime):
        return parse_rfc3339(to_rfc3339(value))  # aware UTC, whole seconds (what the document holds)
    raise ValueError(f"{name} must be a datetime or an RFC 3339 string, got {type(value).__name__}")


def issue_licence(
    private_pem: bytes | str | Ed25519PrivateKey,
    *,
    customer_id: str,
    max_nodes: int,
    max_services: int,
    valid_days: int | None = None,
    expires_at: datetime | str | None = None,
    issued_at: datetime | str | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    license_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sign and return a licence document expiring at ``expires_at`` or ``valid_days`` after issue.

    An explicit ``expires_at`` wins over ``valid_days`` (so callers can override a default duration);
    one of them is required. ``extra`` adds further fields (covered by the signature). Raises
    ``ValueError`` for a licence that ``verify_licence`` would refuse, so an issuer never hands out a
    broken document.
    """
    if valid_days is None and expires_at is None:
        raise ValueError("give valid_days or expires_at")
    key = private_pem if isinstance(private_pem, Ed25519PrivateKey) else _issuer_key(private_pem)
    issued = _as_datetime(utcnow() if issued_at is None else issued_at, "issued_at")
    if expires_at is not None:
        expires = _as_datetime(expires_at, "expires_at")
    else:
        if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
            raise ValueError(f"valid_days must be a whole number of days >= 1, got {valid_days!r}")
        expires = issued + timedelta(days=valid_days)
    doc: dict[str, Any] = dict(extra or {})
    reserved = set(doc) & (set(REQUIRED_FIELDS) | {"features", "signature"})
    if reserved:
        raise ValueError(f"extra fields may not replace standard fields: {', '.join(sorted(reserved))}")
    doc.update({
        "customer_id": customer_id,
        "license_id": license_id if license_id is not None else new_id("lic"),
        "issued_at": to_rfc3339(issued),
        "expires_at": to_rfc3339(expires),
        "max_nodes": max_nodes,
        "max_services": max_services,
        "features": list(dict.fromkeys(DEFAULT_FEATURES if features is None else features)),
    })
    try:
        _parse_fields(doc)
    except LicenceError as err:
        raise ValueError(err.message) from None
    doc["signature"] = base64.b64encode(key.sign(canonical_bytes(doc))).decode("ascii")
    return doc


def _issuer_key(pem: bytes | str) -> Ed25519PrivateKey:
    try:
        return private_key_from_pem(pem, source="issuer key")
    except IdentityError as err:
        raise ValueError(str(err)) from None


# -- verification -------------------------------------------------------------------------------

def _invalid(message: str) -> LicenceError:
    return LicenceError(INVALID, message)


def _parse_fields(doc: dict[str, Any]) -> Licence:
    """Check shape and values (not the signature) and build the ``Licence``."""
    missing = [name for name in REQUIRED_FIELDS if name not in doc]
    if missing:
        raise _invalid(f"licence is missing required field(s): {', '.join(missing)}")
    for name in ("customer_id", "license_id", "issued_at", "expires_at"):
        if not isinstance(doc[name], str):
            raise _invalid(f"licence field {name} must be a string, got {type(doc[name]).__name__}")
    for name in ("max_nodes", "max_services"):
        if isinstance(doc[name], bool) or not isinstance(doc[name], int):
            raise _invalid(f"licence field {name} must be an integer, got {type(doc[name]).__name__}")
    if not _CUSTOMER_ID.match(doc["customer_id"]):
        raise _invalid(f"licence customer_id {doc['customer_id']!r} is not a customer id (expected cust_...)")
    if not _LICENSE_ID.match(doc["license_id"]):
        raise _invalid(f"licence license_id {doc['license_id']!r} is not a licence id (expected lic_...)")
    if doc["max_nodes"] < 1:
        raise _invalid(f"licence max_nodes must be at least 1, got {doc['max_nodes']}")
    if doc["max_services"] < 0:
        raise _invalid(f"licence max_services must be 0 or more, got {doc['max_services']}")
    dates = {}
    for name in ("issued_at", "expires_at"):
        try:
            dates[name] = parse_rfc3339(doc[name])
        except ValueError as err:
            raise _invalid(f"licence field {name}: {err}") from None
    if not dates["issued_at"] < dates["expires_at"]:
        raise _invalid(
            f"licence expires_at ({doc['expires_at']}) must be after issued_at ({doc['issued_at']})")
    features = doc.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) and _FEATURE.match(f) for f in features):
        raise _invalid("licence field features must be a list of feature names (lowercase words like 'tcp')")
    return Licence(
        customer_id=doc["customer_id"], license_id=doc["license_id"], issued_at=dates["issued_at"],
        expires_at=dates["expires_at"], max_nodes=doc["max_nodes"], max_services=doc["max_services"],
        features=tuple(features), raw=copy.deepcopy(doc),
    )


def verify_licence(doc: dict[str, Any], issuer_public_keys: list[str]) -> Licence:
    """Check a licence document and its signature against ANY of the trusted issuer keys.

    Raises ``LicenceError("LICENSE_INVALID", message)`` naming the problem: bad shape or values, a
    missing or malformed signature, or a signature no configured issuer key verifies.
    """
    if not isinstance(doc, dict):
        raise _invalid(f"licence must be a JSON object, got {type(doc).__name__}")
    signature = doc.get("signature")
    if signature is None:
        raise _invalid("licence has no signature field: it must be the signed document exactly as issued")
    if not isinstance(signature, str):
        raise _invalid(f"licence signature must be a base64 string, got {type(signature).__name__}")
    lic = _parse_fields(doc)
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("licence signature is not valid base64") from None
    try:
        signed = canonical_bytes(doc)
    except (TypeError, ValueError) as err:
        raise _invalid(f"licence contains values that are not plain JSON ({err})") from None
    keys, malformed = [], []
    for text in issuer_public_keys or []:
        try:
            keys.append(public_key_from_b64(text))
        except ValueError:
            malformed.append(text)
    if not keys:
        hint = f" ({len(malformed)} malformed key(s) ignored)" if malformed else ""
        raise _invalid("no trusted licence issuer key is configured: set license.issuer_public_keys in the "
                       f"agent config to the base64 Ed25519 key(s) of your licence issuer{hint}")
    if not any(verify_signature(key, signed, sig) for key in keys):
        hint = f"; {len(malformed)} configured key(s) are malformed and were ignored" if malformed else ""
        raise _invalid("licence signature does not verify against any trusted issuer key (check "
                       "license.issuer_public_keys in the agent config, and that the licence file was not "
                       f"edited{hint})")
    return lic


# -- state machine -------------------------------------------------------------------------------

def _days_left(delta: timedelta) -> int:
    """Days left, counting a started day as a day: a 365-day licence shows 365 just after issue, and
    "warning" (30 days or less) never shows more than 30."""
    return max(0, -(-delta // timedelta(days=1)))


def licence_state(lic: Licence, now: datetime) -> LicenceState:
    """The licence's state at ``now`` (aware datetime). Boundaries are half-open:

    valid: more than 30 days before expiry; warning: 30 days or less before expiry;
    grace: [expiry, expiry + 14 d); read_only: [expiry + 14 d, expiry + 44 d); suspended: after that.
    """
    expires = lic.expires_at
    grace_end = expires + GRACE_PERIOD
    read_only_end = grace_end + READ_ONLY_PERIOD
    when = to_cli(expires)
    if now < expires:
        left = expires - now
        days = _days_left(left)
        if left > WARNING_WINDOW:
            return LicenceState("valid", days, f"licence valid until {when} ({days} days remaining)",
                                True, True, True, expires)
        return LicenceState("warning", days, f"licence expires in {days} days ({when}); renew it before then",
                            True, True, True, expires)
    if now < grace_end:
        days = _days_left(grace_end - now)
        message = f"licence expired on {when}; grace period: fully operational until {to_cli(grace_end)}, " \
                  "then read-only"
        return LicenceState("grace", days, message, True, True, True, grace_end)
    if now < read_only_end:
        days = _days_left(read_only_end - now)
        return LicenceState("read_only", days, f"licence expired on {when}; read-only until "
                            f"{to_cli(read_only_end)} (changes blocked), then suspended", False, True, True,
                            read_only_end)
    message = f"licence expired on {when}; suspended since {to_cli(read_only_end)}: services stopped and " \
              "most API calls refused"
    return LicenceState("suspended", 0, message, False, False, False, None)


def check_not_expired_for_bootstrap(lic: Licence, now: datetime) -> None:
    """Bootstrap refuses a licence that is already past expiry (grace periods are for running clusters)."""
    if now >= lic.expires_at:
        raise LicenceError(EXPIRED, f"license has expired: {lic.license_id} expired on "
                                    f"{to_cli(lic.expires_at)}; bootstrap needs a current licence (ask your "
                                    "issuer for a renewed license.json)")


def same_customer(a: Licence, b: Licence) -> bool:
    """Licences of one customer may share a cluster and replace each other on renewal."""
    return a.customer_id == b.customer_id
