"""The data plane's worker pool: reuses idle threads, grows without queueing behind busy ones, and shrinks."""

from __future__ import annotations

import threading
import time

import pytest
from arctic.dataplane.workers import WorkerPool


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_an_idle_worker_is_reused_instead_of_starting_a_thread():
    pool = WorkerPool("t", idle_seconds=5)
    names: list[str] = []
    for _ in range(5):
        done = threading.Event()
        pool.submit(lambda done=done: (names.append(threading.current_thread().name), done.set()))
        assert done.wait(5)
        assert wait_for(lambda: pool._idle == 1)  # back in the pool before the next submit
    assert pool.workers == 1 and set(names) == {"t-1"}


def test_busy_workers_never_hold_up_a_new_task():
    pool = WorkerPool("t", idle_seconds=5)
    release = threading.Event()
    started = threading.Semaphore(0)
    for _ in range(20):  # long-lived tasks, like relays
        pool.submit(lambda: (started.release(), release.wait(10)))
    for _ in range(20):
        assert started.acquire(timeout=5), "a task waited for a busy worker"
    assert pool.workers == 20
    release.set()


def test_idle_workers_retire_after_the_idle_time():
    pool = WorkerPool("t", idle_seconds=0.1)
    gate = threading.Event()
    for _ in range(4):
        pool.submit(lambda: gate.wait(5))
    gate.set()
    assert wait_for(lambda: pool.workers == 0), f"{pool.workers} workers still alive"
    done = threading.Event()
    pool.submit(done.set)  # the pool still works after shrinking to nothing
    assert done.wait(5)


def test_a_failing_task_is_logged_and_the_worker_lives_on(caplog):
    pool = WorkerPool("t", idle_seconds=5)

    def boom() -> None:
        raise ValueError("stray")

    pool.submit(boom)
    assert wait_for(lambda: pool._idle == 1)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(5) and pool.workers == 1
    assert any("worker task failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_the_thread_limit_refuses_work_with_runtime_error():
    pool = WorkerPool("t", idle_seconds=5, max_workers=2)
    gate = threading.Event()
    pool.submit(lambda: gate.wait(5))
    pool.submit(lambda: gate.wait(5))
    with pytest.raises(RuntimeError, match="maximum"):
        pool.submit(lambda: None)
    gate.set()
