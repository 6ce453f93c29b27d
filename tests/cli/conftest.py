"""Fixtures for CLI tests.

Unit level: ``fake_agent`` replaces the HTTP session with an in-memory router (no sockets), and
``run_cli`` runs ``arctic`` in-process returning (exit code, stdout, stderr).
Live level: ``live_agent`` is the shared ``agent`` fixture (a real ``arctic-agent`` process) when the
suite provides it, and a skip otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from arctic.cli import client as client_module
from arctic.cli import context as context_module
from arctic.cli import interface_wait
from arctic.cli.main import run
from clifakes import FakeAgent, FakeClock, Result, write_cli_config


@pytest.fixture(autouse=True)
def wait_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """No in-process CLI test waits on a real clock: ``services create`` polls on this one instead."""
    clock = FakeClock()
    monkeypatch.setattr(interface_wait, "CLOCK", clock.monotonic)
    monkeypatch.setattr(interface_wait, "SLEEP", clock.sleep)
    return clock


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> FakeAgent:
    fake = FakeAgent()
    monkeypatch.setattr(client_module, "SESSION_FACTORY", lambda: fake)
    return fake


@pytest.fixture
def cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bootstrapped-looking config selected through ARCTIC_CONFIG; no env leaks from the caller."""
    for var in ("ARCTIC_URL", "ARCTIC_TOKEN", "ARCTIC_RECOVERY_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    path = write_cli_config(tmp_path / "cfg" / "config.yaml")
    monkeypatch.setenv("ARCTIC_CONFIG", str(path))
    return path


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``arctic ARGS`` in-process; ``tty=True`` pretends stdin is a terminal, ``stdin`` feeds it."""

    def _run(*args: str, tty: bool = False, stdin: str | None = None) -> Result:
        monkeypatch.setattr(context_module, "stdin_is_interactive", lambda: tty)
        if stdin is not None:
            import io
            import sys

            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(int(code), captured.out, captured.err)

    return _run


@pytest.fixture
def live_agent(agent: Any) -> Any:
    """The suite's real-agent fixture (``tests/conftest.py::agent``), by the name the CLI tests read best with."""
    return agent
