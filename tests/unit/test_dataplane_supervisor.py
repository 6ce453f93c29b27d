"""The data-plane supervisor with real processes (a stand-in data plane: no sockets, no kernel changes).

Proves: it starts the data plane once a config exists, signals reloads, leaves it running when the agent stops,
the next agent instance adopts it instead of starting another, a dead one is restarted after a back-off, and a
pidfile that names another process is never trusted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from arctic.config import parse_config
from arctic.daemon.dataplane_supervisor import DataplaneSupervisor
from arctic.procinfo import process_start_time

FAKE = textwrap.dedent("""\
    import json, os, signal, sys, time
    here = os.path.dirname(sys.argv[sys.argv.index("--config") + 1])
    with open(os.path.join(here, "launches"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    if open(os.path.join(here, "mode")).read().strip() == "crash":
        sys.exit(1)
    signal.signal(signal.SIGHUP, lambda *_: open(os.path.join(here, "hups"), "a").write("hup\\n"))
    for _ in range(600):  # at most 60 s, whatever happens to the test
        tmp = os.path.join(here, ".stats.tmp")
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "listening": {"tunnel": "0.0.0.0:61000"}, "updated_at": time.time()}, f)
        os.replace(tmp, os.path.join(here, "dataplane.stats.json"))
        time.sleep(0.1)
""")


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "mode").write_text("run")
    (tmp_path / "dataplane.json").write_text("{}")
    (tmp_path / "fake_dataplane.py").write_text(FAKE)
    yield tmp_path
    launches = tmp_path / "launches"
    for line in (launches.read_text().split() if launches.exists() else []):
        with contextlib.suppress(ProcessLookupError):  # our own stand-ins only, by pid
            if process_start_time(int(line)) is not None:
                os.kill(int(line), signal.SIGKILL)


def supervisor(data_dir: Path, **dataplane) -> DataplaneSupervisor:
    config = parse_config({"data_dir": str(data_dir), "dataplane": {"drain_seconds": 1, **dataplane}}, env={})
    sup = DataplaneSupervisor(config)
    sup.argv = [sys.executable, str(data_dir / "fake_dataplane.py"), *sup.argv[1:]]  # "-m arctic.dataplane ..."
    return sup


def launches(data_dir: Path) -> list[int]:
    path = data_dir / "launches"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_started_once_a_config_exists_and_reloaded_by_sighup(data_dir):
    sup = supervisor(data_dir, keep_on_stop=False)
    sup.start()
    try:
        assert sup.readiness() == {"dataplane": "waiting for the first reconcile"} and launches(data_dir) == []
        sup.config_written(changed=True)
        wait_for(lambda: sup.readiness() == {"dataplane": "ok"})
        sup.config_written(changed=True)
        wait_for(lambda: (data_dir / "hups").exists())
        assert len(launches(data_dir)) == 1
    finally:
        sup.stop()
    assert process_start_time(launches(data_dir)[0]) is None and not (data_dir / "dataplane.pid").exists()


def test_an_agent_restart_adopts_the_running_data_plane_instead_of_starting_another(data_dir):
    first = supervisor(data_dir)  # keep_on_stop: true (the default)
    first.start()
    first.config_written(changed=True)
    pid = wait_for(lambda: first.pid)
    wait_for(lambda: first.readiness() == {"dataplane": "ok"})  # up, its SIGHUP handler in place
    first.stop()
    assert process_start_time(pid) is not None, "an agent stop must leave the data plane running"

    second = supervisor(data_dir, keep_on_stop=False)
    second.start()
    try:
        assert second.pid == pid
        assert not (data_dir / "hups").exists()
        second.config_written(changed=True)  # a new config reaches the adopted process, not a new one
        wait_for(lambda: (data_dir / "hups").exists())
        assert launches(data_dir) == [pid]
    finally:
        second.stop()
    assert process_start_time(pid) is None


def test_a_dead_data_plane_is_restarted_after_a_back_off(data_dir):
    (data_dir / "mode").write_text("crash")
    sup = supervisor(data_dir, keep_on_stop=False)
    sup.start()
    try:
        sup.config_written(changed=True)
        wait_for(lambda: sup.readiness()["dataplane"].startswith("error: not running (exited with status 1)"))
        (data_dir / "mode").write_text("run")
        wait_for(lambda: sup.readiness() == {"dataplane": "ok"}, timeout=15)
        assert len(launches(data_dir)) >= 2
    finally:
        sup.stop()


def test_a_pidfile_naming_another_process_is_ignored_and_that_process_left_alone(data_dir):
    (data_dir / "dataplane.pid").write_text(f'{{"pid": {os.getpid()}, "start_time": 1}}')
    sup = supervisor(data_dir, keep_on_stop=False)
    sup.start()
    try:
        assert sup.pid is None and not (data_dir / "dataplane.pid").exists()
    finally:
        sup.stop()
