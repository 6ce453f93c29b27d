"""sd_notify by hand (``arctic.daemon.sdnotify``): real datagrams to a socket the test binds, path and abstract."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from arctic.daemon.sdnotify import Notifier
from sdnotifykit import NotifyListener


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths are limited to 107 bytes (pytest's tmp_path may not be)."""
    with tempfile.TemporaryDirectory(prefix="arcsd-") as name:
        yield Path(name)


@pytest.fixture
def listener(short_dir: Path) -> Iterator[NotifyListener]:
    with NotifyListener(str(short_dir / "notify")) as sock:
        yield sock


@pytest.fixture
def abstract() -> Iterator[NotifyListener]:
    with NotifyListener.abstract() as sock:
        yield sock


def datagram(listener: NotifyListener) -> dict[str, str]:
    message = listener.receive(timeout=5)
    assert message is not None, "the notifier sent nothing"
    return message.fields


def test_ready_status_and_stopping_reach_a_file_system_socket(listener):
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value})
    assert notifier.status("starting: waiting for the first reconcile")
    assert notifier.ready("ready: 3 services, data plane up")
    assert notifier.stopping()
    assert datagram(listener) == {"STATUS": "starting: waiting for the first reconcile"}
    assert datagram(listener) == {"READY": "1", "STATUS": "ready: 3 services, data plane up"}
    assert datagram(listener) == {"STOPPING": "1", "STATUS": "stopping"}


def test_an_at_sign_means_the_abstract_namespace(abstract):
    assert abstract.env_value.startswith("@")
    assert Notifier({"NOTIFY_SOCKET": abstract.env_value}).ready("ready")
    assert datagram(abstract) == {"READY": "1", "STATUS": "ready"}


def test_a_status_stays_one_line(listener):
    Notifier({"NOTIFY_SOCKET": listener.env_value}).status("degraded: dataplane: error: one\ntwo\r\n  three")
    assert datagram(listener) == {"STATUS": "degraded: dataplane: error: one two three"}


def test_without_notify_socket_every_call_is_a_no_op():
    notifier = Notifier({})
    assert notifier.address is None and notifier.watchdog_period is None
    assert not notifier.ready("ready") and not notifier.status("x") and not notifier.watchdog()
    assert not notifier.stopping()
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).address is None, "only AF_UNIX sockets are spoken here"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failing_send_never_raises_and_is_logged_once_at_debug(short_dir):
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody-listens")})
    logger, handler = logging.getLogger("arctic.api"), Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        assert not notifier.ready("ready")
        assert not notifier.status("still nobody")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    failures = [r for r in handler.records if r.getMessage() == "cannot notify systemd"]
    assert len(failures) == 1 and failures[0].levelno == logging.DEBUG


def test_the_watchdog_pings_every_half_of_watchdog_usec(listener):
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "30000000",
                         "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_period == 15.0
    assert notifier.watchdog()
    assert datagram(listener) == {"WATCHDOG": "1"}


def test_a_watchdog_meant_for_another_pid_is_not_pinged(listener):
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "30000000",
                         "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.watchdog_period is None
    assert not notifier.watchdog()
    notifier.status("after the ping that must not be")  # datagrams keep their order: this one must come first
    assert datagram(listener) == {"STATUS": "after the ping that must not be"}


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_no_or_a_meaningless_watchdog_usec_means_no_watchdog(listener, usec):
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_period is None and not notifier.watchdog()


def test_from_environment_keeps_the_socket_but_hides_it_from_child_processes(listener, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)
    assert notifier.watchdog_period == 1.0
    assert notifier.watchdog()
    assert datagram(listener) == {"WATCHDOG": "1"}
