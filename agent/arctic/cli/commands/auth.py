"""``arctic auth token``: print a bearer token, so ``TOKEN=$(arctic auth token)`` feeds curl."""

from __future__ import annotations

import click

from arctic.cli.context import CliState, common_options, pass_state


@click.group("auth")
def command() -> None:
    """Authentication helpers."""


@command.command("token")
@common_options
@pass_state
def token(state: CliState) -> None:
    """Print only an access token on stdout (the cluster credential's, or --token's)."""
    click.echo(state.client().access_token())
