"""``arctic credentials`` (alias ``credential``): list, create, revoke, rotate."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.context import CliState, common_options, confirm_destructive, pass_state, yes_option
from arctic.cli.output import format_timestamp, render_kv

SECRET_WARNING = "WARNING: The client secret is only shown once. Store it securely."
LIST_VALUE_COLUMN = 14  # as documented: "Client ID:    cli_..." beside "Last Used At: ..."


@click.group("credentials")
def command() -> None:
    """OAuth client credentials (API access) and the shared cluster credential."""


def _credential_list(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        body = body.get("credentials", [])
    return [c for c in body or [] if isinstance(c, dict)]


def _list_block(c: dict[str, Any]) -> str:
    return render_kv(
        [
            ("Client ID", c.get("client_id")),
            ("Scopes", c.get("scopes")),
            ("License ID", c.get("license_id")),
            ("Created At", format_timestamp(c.get("created_at"))),
            ("Last Used At", format_timestamp(c.get("last_used_at"), empty="never")),
        ],
        width=LIST_VALUE_COLUMN,
    )


@command.command("list")
@common_options
@pass_state
def list_credentials(state: CliState) -> None:
    """List credentials (secrets are never shown)."""
    body = state.client().get("/v1/credentials")
    state.output().emit(body, lambda b: "\n\n".join(_list_block(c) for c in _credential_list(b)))


@command.command("create")
@click.argument("scope_args", nargs=-1, metavar="[SCOPE]...")
@click.option("--scopes", default=None, metavar="a,b",
              help="Comma-separated scopes, short (peers.read) or full URN. None: inherit the caller's.")
@common_options
@pass_state
def create_credential(state: CliState, scope_args: tuple[str, ...], scopes: str | None) -> None:
    """Create a credential; its secret is printed once."""
    wanted = [s.strip() for s in (scopes or "").split(",") if s.strip()] + [s for s in scope_args if s.strip()]
    body: dict[str, Any] = {"scopes": wanted} if wanted else {}
    result = state.client().post("/v1/credentials", json=body)
    out = state.output()
    if out.machine:
        out.emit(result)
        out.message(SECRET_WARNING)
        return
    click.echo("Credentials created")
    click.echo(
        render_kv(
            [
                ("Client ID", result.get("client_id")),
                ("Client Secret", result.get("client_secret")),
                ("Scopes", result.get("scopes")),
                ("Created", format_timestamp(result.get("created_at"))),
            ]
        )
    )
    click.echo()
    click.echo(SECRET_WARNING)


@command.command("revoke")
@click.argument("client_id")
@yes_option
@common_options
@pass_state
def revoke_credential(state: CliState, client_id: str, yes: bool) -> None:
    """Revoke a credential now; its live tokens stop working immediately."""
    confirm_destructive(f"Revoke credential {client_id}? Its tokens stop working immediately.", yes=yes)
    body = state.client().delete(f"/v1/credentials/{client_id}")
    out = state.output()
    if out.machine:
        out.emit(body if body is not None else {"deleted": True})
        return
    click.echo(f"Credential revoked successfully: Client ID={client_id}")


@command.command("rotate")
@click.option("--update-config", is_flag=True, help="Write the new secret into the CLI config.")
@common_options
@pass_state
def rotate_credential(state: CliState, update_config: bool) -> None:
    """Rotate the shared cluster credential; the old secret keeps working for 24 hours."""
    result = state.client().post("/v1/cluster/credentials/rotate", json={})
    out = state.output()
    if update_config:
        cfg = state.config()
        cluster = cfg.require_current()
        if result.get("client_id"):
            cluster.client_id = str(result["client_id"])
        cluster.client_secret = str(result.get("client_secret") or "")
        cfg.save()
    if out.machine:
        out.emit(result)
    else:
        click.echo("Cluster credential rotated")
        click.echo(
            render_kv(
                [
                    ("Client ID", result.get("client_id")),
                    ("Client Secret", result.get("client_secret")),
                    ("Version", result.get("version")),
                    ("Rotated By", result.get("rotated_by")),
                    ("Rotated At", format_timestamp(result.get("rotated_at"))),
                ]
            )
        )
        click.echo()
    if update_config:
        out.human(f"Configuration updated: {state.config().path}")
    else:
        out.human(SECRET_WARNING)
        out.human("The previous secret stays valid for 24 hours. Use --update-config to save the new one.")
