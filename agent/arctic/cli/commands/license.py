"""``arctic license show|status|update``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from arctic.cli.commands._shared import read_licence_file
from arctic.cli.context import CliState, common_options, pass_state
from arctic.cli.output import format_timestamp, render_kv


@click.group("license")
def command() -> None:
    """Show, check or renew the cluster licence."""


def _flatten(body: Any) -> dict[str, Any]:
    """Accept both ``{license_id, ..., state}`` and ``{"license": {...}, "state": ...}``."""
    if not isinstance(body, dict):
        return {}
    flat = dict(body)
    nested = flat.pop("license", None)
    if isinstance(nested, dict):
        flat = {**nested, **flat}
    state = flat.get("state")
    if isinstance(state, dict):  # e.g. {"state": {"name": "warning", "days_remaining": 12}}
        flat = {**state, **flat, "state": state.get("name") or state.get("state")}
    return flat


def _licence_rows(lic: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("License ID", lic.get("license_id")),
        ("Customer ID", lic.get("customer_id")),
        ("State", lic.get("state")),
        ("Issued At", format_timestamp(lic.get("issued_at"))),
        ("Expires", format_timestamp(lic.get("expires_at"))),
        ("Max Nodes", lic.get("max_nodes")),
        ("Max Services", lic.get("max_services")),
    ]
    if "features" in lic:
        rows.append(("Features", lic.get("features")))
    for key, label in (("days_remaining", "Days Remaining"), ("message", "Message")):
        if lic.get(key) not in (None, ""):
            rows.append((label, lic[key]))
    return rows


@command.command("show")
@common_options
@pass_state
def show(state: CliState) -> None:
    """Show the licence this agent runs under."""
    body = state.client().get("/v1/license")
    state.output().emit(body, lambda b: render_kv(_licence_rows(_flatten(b))))


@command.command("status")
@common_options
@pass_state
def status(state: CliState) -> None:
    """Show the licence state (valid, warning, grace, read_only, suspended) and what it allows."""
    body = state.client().get("/v1/license")
    lic = _flatten(body)

    def table(_b: Any) -> str:
        rows: list[tuple[str, Any]] = [
            ("State", lic.get("state")),
            ("License ID", lic.get("license_id")),
            ("Expires", format_timestamp(lic.get("expires_at"))),
        ]
        for key, label in (
            ("days_remaining", "Days Remaining"),
            ("allows_writes", "Writes Allowed"),
            ("data_plane_enabled", "Data Plane"),
            ("message", "Message"),
        ):
            if key in lic:
                value = lic[key]
                rows.append((label, ("Yes" if value else "No") if isinstance(value, bool) else value))
        return render_kv(rows)

    state.output().emit(body, table)


@command.command("update")
@click.option("--license-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The renewed, signed licence JSON.")
@common_options
@pass_state
def update(state: CliState, license_file: Path) -> None:
    """Replace the licence (renewal or upgrade; the customer must stay the same)."""
    doc = read_licence_file(license_file)
    body = state.client().put("/v1/license", json={"license": doc})
    out = state.output()
    out.emit(body, lambda b: render_kv(_licence_rows(_flatten(b))))
    out.human("License updated successfully")
