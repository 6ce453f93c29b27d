"""``arctic``: root command group, global options, and the one place that maps failures to exit codes.

Exit codes (reference notes §3.3): 0 ok, 1 general/API error, 2 usage, 3 config, 4 connection,
5 auth, 6 partial. Every failure prints ``Error: <message>`` on stderr (plus an optional hint line).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from arctic import __version__
from arctic.cli.commands import (
    auth,
    bootstrap,
    cluster,
    config_cmd,
    credentials,
    health,
    license,
    peers,
    routes,
    services,
)
from arctic.cli.context import OUTPUT_CHOICE, CliState
from arctic.cli.errors import CliError, ExitCode

# click >= 8.2 signals "group invoked without a subcommand" with this UsageError subclass.
NO_ARGS_HELP: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None
)

ALIASES = {"peer": "peers", "service": "services", "route": "routes", "credential": "credentials"}


class AliasedGroup(click.Group):
    """Accepts the documented singular aliases (``arctic peer list``) without listing them in help."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else _name), cmd, rest


@click.group(cls=AliasedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="ARCTIC_URL", metavar="URL", help="Agent URL (env ARCTIC_URL); overrides the config.")
@click.option("--token", envvar="ARCTIC_TOKEN", metavar="TOKEN", help="Bearer token (env ARCTIC_TOKEN).")
@click.option(
    "--config",
    "config_path",
    envvar="ARCTIC_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CLI config file (env ARCTIC_CONFIG; default $XDG_CONFIG_HOME or ~/.config/arctic/config.yaml).",
)
@click.option("-o", "--output", "output_format", type=OUTPUT_CHOICE, help="Output format: table, wide, json or yaml.")
@click.option("-j", "json_flag", is_flag=True, help="Shorthand for -o json.")
@click.option(
    "--recovery-token",
    envvar="ARCTIC_RECOVERY_TOKEN",
    metavar="TOKEN",
    help="Break-glass recovery token sent as X-Arctic-Recovery (env ARCTIC_RECOVERY_TOKEN).",
)
@click.option(
    "--recovery-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the recovery token from this file (used when neither --recovery-token nor the env is set).",
)
@click.version_option(__version__, "--version", prog_name="arctic")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    token: str | None,
    config_path: Path | None,
    output_format: str | None,
    json_flag: bool,
    recovery_token: str | None,
    recovery_token_file: Path | None,
) -> None:
    """Manage an Arctic cluster: peers, services, routes, credentials."""
    ctx.obj = CliState(
        url=url or None,
        token=token or None,
        config_path=config_path,
        output_format="json" if json_flag else (output_format.lower() if output_format else None),
        recovery_token_value=recovery_token or None,
        recovery_token_file=recovery_token_file,
    )


for module in (bootstrap, health, cluster, license, peers, services, routes, credentials, config_cmd, auth):
    cli.add_command(module.command)


def _usage_message(exc: click.UsageError) -> str:
    """The product's wording: ``--target-peer is required``, ``unknown flag: --x``."""
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        param = exc.param
        if isinstance(param, click.Option):
            flag = max(param.opts, key=len)
            return f"{flag} is required"
        return f"missing argument {param.human_readable_name}"
    if isinstance(exc, click.NoSuchOption):
        return f"unknown flag: {exc.option_name}"
    return exc.format_message()


def _fail(message: str, hint: str | None = None) -> None:
    click.echo(f"Error: {message}", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (used by ``main`` and tests)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="arctic", standalone_mode=False)
    except click.UsageError as exc:
        if isinstance(exc, NO_ARGS_HELP):  # bare `arctic` / `arctic services`: show help, as click does
            click.echo(exc.format_message(), err=True)
            return ExitCode.USAGE
        hint = None
        if exc.ctx is not None:
            hint = f"run '{exc.ctx.command_path} --help' for usage"
        _fail(_usage_message(exc), hint)
        return ExitCode.USAGE
    except CliError as exc:
        _fail(exc.message, exc.hint)
        return int(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return ExitCode.GENERAL
    except BrokenPipeError:
        return ExitCode.OK
    return int(rv) if isinstance(rv, int) else ExitCode.OK


def main() -> None:
    """Console-script entry point (``arctic = arctic.cli.main:main``)."""
    code = run()
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    sys.exit(code)
