"""An elastic pool of reusable threads for connection set-up and relay directions.

Why not ``threading.Thread(...).start()`` per connection: ``start()`` blocks until the new thread has booted, which
needs a GIL hand-off; with dozens of busy relay threads that wait costs milliseconds and caps the connection
rate (measured with bench/connections). Why not ``ThreadPoolExecutor``: relays are long-lived, so a bounded pool
would queue new connections behind old ones. Here a task goes to an idle worker if there is one, else to a new
worker; workers that stay idle for ``idle_seconds`` exit, so an idle data plane holds few threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from ..logs import get_logger

Task = Callable[[], None]


class WorkerPool:
    def __init__(self, name: str, idle_seconds: float = 30.0, max_workers: int = 20_000) -> None:
        self.name = name
        self.idle_seconds = idle_seconds
        self.max_workers = max_workers
        self._tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._workers = 0
        self._serial = 0
        self.log = get_logger("tproxymgr")

    @property
    def workers(self) -> int:
        return self._workers

    def submit(self, task: Task) -> None:
        """Run ``task`` on a worker thread; RuntimeError if no thread can be had (the caller refuses the work)."""
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # claimed: that worker will take this task
                self._tasks.put(task)
                return
            if self._workers >= self.max_workers:
                raise RuntimeError(f"{self.name}: {self._workers} worker threads, the maximum")
            self._workers += 1
            self._serial += 1
            serial = self._serial
        try:
            threading.Thread(target=self._work, args=(task,), name=f"{self.name}-{serial}", daemon=True).start()
        except RuntimeError:
            with self._lock:
                self._workers -= 1
            raise

    def _work(self, task: Task) -> None:
        while True:
            try:
                task()
            except Exception:  # tasks handle their own errors; a stray one is logged and the worker lives on
                self.log.exception("worker task failed", pool=self.name)
            with self._lock:
                self._idle += 1
            while True:
                try:
                    task = self._tasks.get(timeout=self.idle_seconds)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0 and self._tasks.empty():  # nobody claimed a worker meanwhile: retire
                            self._idle -= 1
                            self._workers -= 1
                            return
                    # a submit claimed an idle worker just as we timed out: its task is queued, take it
