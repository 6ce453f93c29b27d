"""``arctic-agent license keygen|issue|verify``: the licence issuer's tool, also used by tests and the demo.

An issuer generates a key pair once, gives the public key to the agents (``license.issuer_public_keys``)
and signs licences with the private key. ``verify`` checks a licence file the way an agent would.
Exit codes: 0 success, 1 refused (invalid licence, unusable key), 2 usage error.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from arctic.cluster.identity import IdentityError, write_private_key_file
from arctic.cluster.licence import (
    LicenceError,
    generate_issuer_key,
    issue_licence,
    licence_state,
    verify_licence,
)
from arctic.timeutil import parse_rfc3339, to_cli, utcnow


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _timestamp(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


@click.group("license", context_settings={"help_option_names": ["-h", "--help"]})
def license_group() -> None:
    """Issue and check signed licences (issuer tool)."""


@license_group.command("keygen")
@click.option("--out-private", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the issuer private key (PKCS8 PEM, mode 0600; must not exist).")
@click.option("--out-public", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the public key (base64) to this file.")
def keygen(out_private: Path, out_public: Path | None) -> None:
    """Create an issuer key pair and print the public key (for license.issuer_public_keys)."""
    private_pem, public_b64 = generate_issuer_key()
    try:
        write_private_key_file(out_private, private_pem, what="issuer key")
    except (IdentityError, OSError) as err:
        _fail(str(err))
    if out_public is not None:
        try:
            out_public.write_text(public_b64 + "\n", encoding="ascii")
        except OSError as err:
            _fail(f"cannot write public key {out_public}: {err.strerror or err}")
    click.echo(public_b64)


@license_group.command("issue")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Issuer private key (from 'keygen').")
@click.option("--customer-id", required=True, help="Customer id, e.g. cust_acme (the cluster boundary).")
@click.option("--max-nodes", required=True, type=click.IntRange(min=1), help="Peers allowed in the cluster.")
@click.option("--max-services", required=True, type=click.IntRange(min=0), help="Services allowed.")
@click.option("--days", type=click.IntRange(min=1), help="Valid for this many days from issued-at.")
@click.option("--expires-at", callback=_timestamp, help="Expiry as RFC 3339 (instead of --days).")
@click.option("--issued-at", callback=_timestamp, help="Issue time as RFC 3339 (default: now).")
@click.option("--feature", "features", multiple=True,
              help="Enabled feature (repeatable; default: tcp, kcp, qos, transparent).")
@click.option("--license-id", help="Licence id (default: a new lic_<ULID>).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the licence here instead of stdout.")
def issue(key_file: Path, customer_id: str, max_nodes: int, max_services: int, days: int | None,
          expires_at: datetime | None, issued_at: datetime | None, features: tuple[str, ...],
          license_id: str | None, out: Path | None) -> None:
    """Sign a licence and print it (or write it with --out)."""
    if (days is None) == (expires_at is None):
        raise click.UsageError("give exactly one of --days and --expires-at")
    try:
        pem = key_file.read_bytes()
        mode = stat.S_IMODE(os.stat(key_file).st_mode)
    except OSError as err:
        _fail(f"cannot read issuer key {key_file}: {err.strerror or err}")
    if mode & 0o077:
        click.echo(f"Warning: issuer key {key_file} has mode {mode:04o}; restrict it with "
                   f"'chmod 600 {key_file}'", err=True)
    try:
        doc = issue_licence(pem, customer_id=customer_id, max_nodes=max_nodes, max_services=max_services,
                            valid_days=days, expires_at=expires_at, issued_at=issued_at,
                            features=list(features) if features else None, license_id=license_id)
    except ValueError as err:
        _fail(str(err))
    text = json.dumps(doc, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        _fail(f"cannot write licence {out}: {err.strerror or err}")
    click.echo(f"Wrote licence {doc['license_id']} for {customer_id} (expires {doc['expires_at']}) to {out}",
               err=True)


@license_group.command("verify")
@click.option("--issuer-public-key", "issuer_keys", required=True, multiple=True,
              help="Trusted issuer public key, base64 (repeatable: any of them may have signed).")
@click.option("--at", "at", callback=_timestamp,
              help="Evaluate the state at this RFC 3339 time (default: now).")
@click.argument("licence_file", type=click.Path(dir_okay=False, path_type=Path))
def verify(issuer_keys: tuple[str, ...], at: datetime | None, licence_file: Path) -> None:
    """Check a licence's signature and shape and show its state. Exit 0 valid, 1 invalid."""
    try:
        doc = json.loads(licence_file.read_text(encoding="utf-8"))
    except OSError as err:
        _fail(f"cannot read licence file {licence_file}: {err.strerror or err}")
    except ValueError as err:
        _fail(f"licence file {licence_file} is not valid JSON ({err})")
    try:
        lic = verify_licence(doc, list(issuer_keys))
    except LicenceError as err:
        _fail(f"{err.code}: {err.message}")
    state = licence_state(lic, at or utcnow())
    rows = [
        ("License ID", lic.license_id), ("Customer ID", lic.customer_id),
        ("Issued At", to_cli(lic.issued_at)), ("Expires At", to_cli(lic.expires_at)),
        ("Max Nodes", lic.max_nodes), ("Max Services", lic.max_services),
        ("Features", ", ".join(lic.features) or "-"), ("Signature", "valid"),
        ("State", state.name), ("Days Remaining", state.days_remaining), ("Message", state.message),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        click.echo(f"{label + ':':<{width}}{value}")


def main() -> None:
    """Standalone entry point (``python -m arctic.daemon.license_cmd``)."""
    license_group()


if __name__ == "__main__":
    main()
