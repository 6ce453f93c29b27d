"""``arctic-agent``: run the agent, and the operator's licence tool.

``arctic-agent run --config FILE`` serves the API with waitress (a production WSGI server), writes
a fresh break-glass recovery token, verifies the stored licence (refusing to start when it does not
verify) and shuts down cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from arctic.config import ConfigError, load_config
from arctic.daemon.license_cmd import license_group
from arctic.logs import configure, get_logger

log = get_logger("api")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Arctic host agent."""


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="agent YAML configuration")
def run(config_path: str) -> None:
    """Run the agent (API, store, reconciler) in the foreground until SIGTERM."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(3)
    configure(config.log_format, config.log_level)
    from arctic.daemon.service import AgentService, StartupError  # noqa: PLC0415 - keeps `license` light

    try:
        service = AgentService(config)
        service.start()
    except StartupError as err:
        log.error("refusing to start", reason=str(err))
        click.echo(f"Error: {err}", err=True)
        sys.exit(1)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        while not stop.wait(0.5):
            if not service.healthy():
                log.error("a core component stopped; exiting")
                break
    finally:
        service.stop()
    log.info("agent stopped")


cli.add_command(license_group, "license")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
