"""Per-invocation state shared by every command: global options, the config, the API client.

Global options may be typed before the subcommand (``arctic -j services list``) or, for the ones
operators habitually append (``-o/-j/--url/--token``), after it (``arctic services list -j``);
``common_options`` adds the trailing forms to every leaf command and writes into the same state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from arctic.cli.client import ApiClient, normalise_url
from arctic.cli.config import OUTPUT_FORMATS, CliConfig, ClusterEntry, default_config_path
from arctic.cli.errors import CliError, ConfigError
from arctic.cli.output import Output

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    url: str | None = None
    token: str | None = None
    config_path: Path | None = None
    output_format: str | None = None
    recovery_token_value: str | None = None
    recovery_token_file: Path | None = None
    _config: CliConfig | None = field(default=None, repr=False)
    _client: ApiClient | None = field(default=None, repr=False)

    # -- config -----------------------------------------------------------------------------------

    @property
    def resolved_config_path(self) -> Path:
        return self.config_path if self.config_path else default_config_path()

    def config(self) -> CliConfig:
        if self._config is None:
            self._config = CliConfig.load(self.resolved_config_path)
        return self._config

    def current_cluster(self) -> ClusterEntry | None:
        return self.config().current()

    # -- output -----------------------------------------------------------------------------------

    def output(self) -> Output:
        fmt = self.output_format
        if fmt is None:
            preferred = str(self.config().preference("output_format") or "table").lower()
            fmt = preferred if preferred in OUTPUT_FORMATS else "table"
        return Output(fmt)

    # -- API --------------------------------------------------------------------------------------

    def recovery_token(self) -> str | None:
        """--recovery-token / $ARCTIC_RECOVERY_TOKEN (click resolves those two), then the file."""
        if self.recovery_token_value:
            return self.recovery_token_value.strip()
        if self.recovery_token_file:
            try:
                return self.recovery_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read recovery token file {self.recovery_token_file}: {exc.strerror or exc}"
                ) from exc
        return None

    def client(self) -> ApiClient:
        """Client for --url/$ARCTIC_URL if given, else the current cluster's peer endpoints."""
        if self._client is None:
            cfg = self.config()
            cluster = cfg.current()
            if self.url:
                urls = [normalise_url(self.url)]
            else:
                cluster = cfg.require_current()
                urls = cluster.endpoints()
                if not urls:
                    raise ConfigError(
                        f"cluster {cluster.cluster_id} has no peer endpoints in {cfg.path}",
                        hint="pass --url, or add an endpoint to a peer in the config file",
                    )
            creds = None
            if cluster is not None and cluster.client_id and cluster.client_secret:
                creds = (cluster.client_id, cluster.client_secret)
            self._client = ApiClient(
                urls,
                token=self.token,
                client_credentials=creds,
                recovery_token=self.recovery_token(),
                timeout=float(cfg.preference("timeout") or 30),
            )
        return self._client


pass_state = click.make_pass_decorator(CliState, ensure=True)


def _state(ctx: click.Context) -> CliState:
    return ctx.ensure_object(CliState)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        _state(ctx).output_format = value.lower()


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).output_format = "json"


def _set_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        _state(ctx).url = value


def _set_token(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        _state(ctx).token = value


OUTPUT_CHOICE = click.Choice(OUTPUT_FORMATS, case_sensitive=False)


def common_options(func: F) -> F:
    """Accept ``-o/--output``, ``-j``, ``--url`` and ``--token`` after the subcommand as well."""
    decorators = [
        click.option("-o", "--output", type=OUTPUT_CHOICE, expose_value=False, callback=_set_output,
                     help="Output format (table, wide, json, yaml)."),
        click.option("-j", "--json", "json_flag", is_flag=True, expose_value=False, callback=_set_json,
                     help="Shorthand for -o json."),
        click.option("--url", metavar="URL", expose_value=False, callback=_set_url,
                     help="Talk to this agent (overrides the config)."),
        click.option("--token", metavar="TOKEN", expose_value=False, callback=_set_token,
                     help="Bearer token to use instead of the cluster credential."),
    ]
    for deco in reversed(decorators):
        func = deco(func)
    return func


def yes_option(func: F) -> F:
    return click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation.")(func)


def stdin_is_interactive() -> bool:
    """Separate so tests can pretend to be a terminal."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm_destructive(question: str, *, yes: bool) -> None:
    """Ask ``question [y/N]`` on stderr unless --yes; never block on a non-interactive stdin."""
    if yes:
        return
    if not stdin_is_interactive():
        raise CliError(
            "confirmation required but stdin is not a terminal; nothing was changed",
            hint="pass --yes to confirm non-interactively",
        )
    if not click.confirm(question, default=False, err=True):
        raise CliError("aborted by user; nothing was changed")
