"""``python -m arctic.dataplane --config FILE``: the data plane as its own processes (supervised by the agent).

A master process (``master``) and one worker per CPU (``worker``). Signals go to the master: SIGHUP reloads the
config (so does a change of the file's mtime, checked every second) without touching established connections;
SIGTERM/SIGINT stop accepting and drain for ``drain_seconds``; a second one cuts the drain short. Exit status: 0
after a clean stop, 2 for a bad config or identity key, 1 when a port cannot be opened.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
from pathlib import Path

from arctic.logs import configure, get_logger

from .master import Master


def _raise_fd_limit() -> None:
    """Each relayed connection holds a socket on each side; take the hard limit."""
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
    _raise_fd_limit()
    return Master(Path(args.config), get_logger("tproxymgr")).run()


if __name__ == "__main__":
    sys.exit(main())
