"""While two peers' configurations disagree after a change, connections wait for the next one or are admitted by
the one just replaced (``arctic.dataplane.transitions``), within bounds."""

from __future__ import annotations

import pytest
from arctic.dataplane import transitions
from arctic.dataplane.transitions import Transitions


class FakeTimer:
    def __init__(self, when: float, callback, args: tuple) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Just the clock and timers ``Transitions`` uses, advanced by hand (no test waits on a real clock)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback, *args) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted((t for t in self.timers if t.when <= self.now and not t.cancelled), key=lambda t: t.when)
        self.timers = [t for t in self.timers if t.when > self.now and not t.cancelled]
        for timer in due:
            timer.callback(*timer.args)


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


def test_a_waiting_connection_is_retried_at_each_change_until_it_settles(loop):
    t = Transitions(loop)  # type: ignore[arg-type]
    answers, gave_up = iter([False, True]), []
    t.wait(lambda: next(answers), lambda: gave_up.append(True), 3.0)
    t.changed("cfg-1")  # type: ignore[arg-type]
    assert t.waiting == 1
    t.changed("cfg-2")  # type: ignore[arg-type]
    assert t.waiting == 0
    loop.advance(10)
    assert not gave_up


def test_a_connection_no_change_settles_is_given_up_at_its_deadline(loop):
    t = Transitions(loop)  # type: ignore[arg-type]
    gave_up = []
    t.wait(lambda: False, lambda: gave_up.append(loop.now), 3.0)
    loop.advance(1)
    t.changed("cfg-1")  # type: ignore[arg-type]  # not settled: waits on, with the same deadline
    loop.advance(1.9)
    assert not gave_up
    loop.advance(0.2)
    assert gave_up == [pytest.approx(3.1)] and t.waiting == 0


def test_replaced_configurations_are_offered_newest_first_for_the_grace_period_only(loop):
    t = Transitions(loop)  # type: ignore[arg-type]
    t.changed("cfg-1")  # type: ignore[arg-type]
    loop.advance(5)
    t.changed("cfg-2")  # type: ignore[arg-type]
    assert list(t.retired()) == ["cfg-2", "cfg-1"]
    loop.advance(transitions.RETIRED_GRACE - 4)
    assert list(t.retired()) == ["cfg-2"]
    loop.advance(5)
    assert list(t.retired()) == []
