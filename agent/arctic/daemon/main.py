"""``arctic-agent``: run the agent, and the operator's licence tool.

``arctic-agent run --config FILE`` serves the API with waitress (a production WSGI server), writes
a fresh break-glass recovery token, verifies the stored licence (refusing to start when it does not
verify) and shuts down cleanly on SIGTERM/SIGINT.

Under systemd (``Type=notify``, packaging/systemd/arctic.service) it reports through ``sd_notify``: READY=1 once
start-up is done (``AgentService.startup_pending``: store open, API listening, first reconcile run ended, data
plane ready), or after ``STARTUP_TIMEOUT`` with a STATUS naming what is not ready; STATUS= whenever the state
line changes; WATCHDOG=1 while every core component is alive; STOPPING=1 on the way out. A core component that
stops ends the process with status 1, so ``Restart=on-failure`` brings it back.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import click

from arctic.config import ConfigError, load_config
from arctic.daemon.license_cmd import license_group
from arctic.daemon.sdnotify import Notifier
from arctic.logs import configure, get_logger

log = get_logger("api")

TICK = 0.5  # seconds between checks of the components (less with a short watchdog)
STARTUP_TIMEOUT = 60.0  # READY is sent after this even if the data plane is not ready (the unit allows 90 s)


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

    notifier = Notifier.from_environment()
    notifier.status("starting: opening the store")
    try:
        service = AgentService(config)
        service.start()
    except StartupError as err:
        log.error("refusing to start", reason=str(err))
        click.echo(f"Error: {err}", err=True)
        notifier.status(f"failed: {err}")
        sys.exit(1)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        healthy = supervise(service, stop, notifier)
    finally:
        notifier.stopping()
        service.stop()
    log.info("agent stopped")
    if not healthy:
        sys.exit(1)


def supervise(service, stop: threading.Event, notifier: Notifier, *, startup_timeout: float = STARTUP_TIMEOUT) -> bool:
    """The main loop, until ``stop`` is set (returns True) or a core component stops (False). Every tick: check the
    components, ping the watchdog while they are all alive, send READY once start-up is done (or has taken
    ``startup_timeout``) and STATUS whenever the state line changes."""
    deadline = time.monotonic() + startup_timeout
    tick = min(TICK, notifier.watchdog_period / 2) if notifier.watchdog_period else TICK  # pings <= 1.5 periods apart
    ready, shown, next_ping = False, None, 0.0
    while True:
        if not service.healthy():
            log.error("a core component stopped; exiting")
            return False
        if notifier.watchdog_period is not None and time.monotonic() >= next_ping:
            notifier.watchdog()
            next_ping = time.monotonic() + notifier.watchdog_period
        if ready:
            status = service.status_line()
        else:
            pending = service.startup_pending()
            if pending is not None and time.monotonic() < deadline:
                status = f"starting: {pending}"
            else:
                status = service.status_line()
                if pending is not None:  # systemd must not kill an agent whose data plane is merely slow
                    log.warning("start-up not complete in time; telling systemd the agent is ready anyway",
                                waiting_for=pending, seconds=startup_timeout)
                    status = f"degraded: not ready after {startup_timeout:.0f}s, {pending}"
                notifier.ready(status)
                ready, shown = True, status
        if status != shown:
            notifier.status(status)
            shown = status
        if stop.wait(tick):
            return True


cli.add_command(license_group, "license")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
