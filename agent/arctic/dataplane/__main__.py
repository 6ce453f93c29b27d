"""``python -m arctic.dataplane --config FILE``: the TCP data plane as its own process (supervised by the agent).

Signals: SIGHUP reloads the config (so does a change of the file's mtime, checked every second) without touching
established connections; SIGTERM/SIGINT stop accepting and drain for ``drain_seconds``; a second one cuts the
drain short. Exit status: 0 after a clean stop, 2 for a bad config or identity key, 1 when a port cannot be opened.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import sys
import threading
import time

from arctic.logs import configure, get_logger

from .config import ConfigError
from .engine import Dataplane
from .keys import IdentityKeyError

THREAD_STACK = 1024 * 1024  # two threads per connection; the default 8 MiB stacks are needless address space
TICK = 0.2


def _raise_fd_limit() -> None:
    """Each relayed connection holds 2 sockets and 2 pipes (4 fds); take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arctic.dataplane", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="data-plane JSON config rendered by the agent")
    parser.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("LOG_FORMAT", "json"))
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level)
    log = get_logger("tproxymgr")
    _raise_fd_limit()
    threading.stack_size(THREAD_STACK)

    engine = Dataplane(args.config, log)
    try:
        engine.start()
    except (ConfigError, IdentityKeyError) as err:
        log.error("cannot start: bad configuration", error=str(err), config=args.config)
        return 2
    except OSError as err:
        log.error("cannot start: cannot listen", error=str(err))
        return 1

    state = {"reload": False, "stop": False}

    def on_hup(_signum, _frame) -> None:
        state["reload"] = True

    def on_term(signum, _frame) -> None:
        if state["stop"]:
            engine.hurry = True
        state["stop"] = True
        log.info("stop requested", signal=signal.Signals(signum).name)

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    engine.write_stats()
    last_check = last_stats = time.monotonic()
    while not state["stop"]:
        time.sleep(TICK)
        now = time.monotonic()
        if state["reload"]:
            state["reload"] = False
            engine.reload("SIGHUP")
            engine.write_stats()
        elif now - last_check >= 1.0:
            last_check = now
            if engine.config_changed():
                engine.reload("config file changed")
        if now - last_stats >= 1.0:
            last_stats = now
            engine.write_stats()

    snap = engine.snapshot
    engine.drain(snap.cfg.drain_seconds if snap else 0)
    engine.write_stats()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
