"""The agent's main loop (``arctic.daemon.main.supervise``) as systemd sees it: READY once, STATUS on change,
WATCHDOG only while healthy. A stand-in service, a real ``Notifier`` and a socket the test reads."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from arctic.daemon.main import supervise
from arctic.daemon.sdnotify import Notifier
from sdnotifykit import NotifyListener


class FakeService:
    """Start-up steps are released by the test (``advance``); healthy for ``healthy_ticks`` checks, then not."""

    def __init__(self, pending: list[str | None], healthy_ticks: int | None = None) -> None:
        self.pending = pending
        self.healthy_ticks = healthy_ticks
        self.health_checks = 0
        self.status = "ready: 0 services, data plane up"

    def healthy(self) -> bool:
        self.health_checks += 1
        return self.healthy_ticks is None or self.health_checks <= self.healthy_ticks

    def startup_pending(self) -> str | None:
        return self.pending[0]

    def advance(self) -> None:
        self.pending.pop(0)

    def status_line(self) -> str:
        return self.status


class Loop:
    """``supervise`` in a thread; ``result`` once it returned."""

    def __init__(self, service: FakeService, notifier: Notifier, **kw) -> None:
        self.stop = threading.Event()
        self.result: bool | None = None
        self.thread = threading.Thread(target=self._run, args=(service, notifier), kwargs=kw, daemon=True)
        self.thread.start()

    def _run(self, service, notifier, **kw) -> None:
        self.result = supervise(service, self.stop, notifier, **kw)

    def end(self) -> bool | None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the main loop did not end"
        return self.result


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    with tempfile.TemporaryDirectory(prefix="arcsd-") as name, NotifyListener(str(Path(name) / "n")) as sock:
        yield sock


def test_ready_is_sent_once_when_start_up_is_done_and_status_follows_each_change(listener):
    service = FakeService(["waiting for the first reconcile", "waiting for the data plane (starting)", None])
    loop = Loop(service, Notifier({"NOTIFY_SOCKET": listener.env_value}))
    try:
        first = listener.wait_for("the first status", lambda m: "STATUS" in m.fields)
        assert first.fields == {"STATUS": "starting: waiting for the first reconcile"}
        service.advance()
        second = listener.wait_for("the next status", lambda m: "STATUS" in m.fields)
        assert second.fields == {"STATUS": "starting: waiting for the data plane (starting)"}
        service.advance()
        ready = listener.wait_for("READY", lambda m: "READY" in m.fields)
        assert ready.fields == {"READY": "1", "STATUS": "ready: 0 services, data plane up"}
        service.status = "degraded: dataplane: error: not running"
        changed = listener.wait_for("the degraded status", lambda m: "STATUS" in m.fields)
        assert changed.fields == {"STATUS": "degraded: dataplane: error: not running"}
    finally:
        assert loop.end() is True
    assert [m for m in listener.messages + listener.drain() if "READY" in m.fields] == [ready], "READY twice"


def test_a_start_up_that_takes_too_long_still_ends_in_ready_saying_what_is_missing(listener):
    service = FakeService(["waiting for the data plane (starting)"])  # never done
    loop = Loop(service, Notifier({"NOTIFY_SOCKET": listener.env_value}), startup_timeout=1.0)
    try:
        ready = listener.wait_for("READY", lambda m: "READY" in m.fields, timeout=15)
    finally:
        assert loop.end() is True
    assert ready["STATUS"] == "degraded: not ready after 1s, waiting for the data plane (starting)"
    before = listener.messages[:listener.messages.index(ready)]
    assert {"STATUS": "starting: waiting for the data plane (starting)"} in [m.fields for m in before]


class RecordingNotifier(Notifier):
    """A real notifier that also writes each ping into the service's event list."""

    def __init__(self, env: dict, events: list) -> None:
        super().__init__(env)
        self.events = events

    def watchdog(self) -> bool:
        self.events.append("ping")
        return super().watchdog()


def test_the_watchdog_is_pinged_only_while_the_service_is_healthy_and_the_loop_then_fails(listener):
    service = FakeService([None], healthy_ticks=8)
    events: list[str] = []
    healthy = service.healthy

    def recorded_health() -> bool:
        events.append("healthy" if (ok := healthy()) else "unhealthy")
        return ok

    service.healthy = recorded_health
    notifier = RecordingNotifier({"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "200000"}, events)
    loop = Loop(service, notifier)  # a ping due every 0.1 s, checks every 0.05 s
    loop.thread.join(timeout=10)
    assert loop.result is False, "a core component that stops must end the loop with a failure"
    assert events[-1] == "unhealthy" and events.count("unhealthy") == 1
    assert all(events[i - 1] == "healthy" for i, e in enumerate(events) if e == "ping"), events
    pings = [m for m in listener.drain() if "WATCHDOG" in m.fields]
    assert len(pings) == events.count("ping") >= 2, "pings repeat while healthy, each one a datagram"
