"""sd_notify(3) by hand: tell systemd (``Type=notify``) that the agent is ready, what it is doing, that it lives.

The protocol is one datagram of newline-separated ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Outside systemd the variable is unset and every
call is a no-op. Nothing here raises into the caller: a send that fails is logged once, at debug level (systemd
then acts on the message it did not get: start-up timeout, watchdog).

``$WATCHDOG_USEC`` (set with ``WatchdogSec=``) is the watchdog timeout; pings are due every half of it, and only
when ``$WATCHDOG_PID`` is unset or names this process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from arctic.logs import get_logger

log = get_logger("api")

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
MAX_STATUS = 1000  # characters: a STATUS line is for `systemctl status`, not for logs


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_period: float | None = _watchdog_period(env)  # seconds between pings, None: no watchdog
        self._failed = False

    @classmethod
    def from_environment(cls) -> Notifier:
        """Read the variables and remove them, so child processes (data plane, DHCP clients) never notify."""
        notifier = cls()
        for key in ENV_KEYS:
            os.environ.pop(key, None)
        return notifier

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=value`` lines; True if it was sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(errors="replace"), self.address)
            return True
        except (OSError, ValueError) as err:
            if not self._failed:
                self._failed = True
                log.debug("cannot notify systemd", socket=self.address.replace("\0", "@"), error=str(err))
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def status(self, text: str) -> bool:
        return self.send(_status(text))

    def watchdog(self) -> bool:
        return self.watchdog_period is not None and self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", _status(status))


def _address(path: str) -> str | None:
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    if path:
        log.debug("NOTIFY_SOCKET is not an AF_UNIX path; systemd is not notified", notify_socket=path)
    return None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())[:MAX_STATUS]  # one line: a newline would start another assignment


def _watchdog_period(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        if env.get("WATCHDOG_PID") and int(env["WATCHDOG_PID"]) != os.getpid():
            return None  # the watchdog is someone else's (a parent that passed its environment on)
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None
