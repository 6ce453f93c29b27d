"""Fixtures shared by every test level."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest
from agentkit import AgentProcess, Issuer
from strict_skips import pytest_runtest_makereport  # noqa: F401 - the hook: no silent skips under make test


def pytest_collection_modifyitems(config, items):
    """Lab tests need root (namespaces, nftables); elsewhere they are skipped, never silently passed."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer.generate()


@pytest.fixture
def agent(tmp_path, issuer):
    """A fresh, NOT yet bootstrapped real agent process on 127.0.0.1."""
    proc = AgentProcess(tmp_path / "agent", issuer).start()
    yield proc
    proc.stop()


@pytest.fixture
def bootstrapped_agent(agent):
    agent.bootstrap()
    return agent


@pytest.fixture
def subsystem_log(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[str], pytest.LogCaptureFixture]]:
    """``subsystem_log("qosmgr")``: that subsystem's records at INFO in ``caplog``, even if something configured the
    ``arctic`` logger not to propagate; undone after the test."""
    undo: list[Callable[[], None]] = []

    def capture(subsystem: str) -> pytest.LogCaptureFixture:
        logger = logging.getLogger(f"arctic.{subsystem}")
        old = logger.level
        logger.setLevel(logging.INFO)
        undo.append(lambda: logger.setLevel(old))
        if not logging.getLogger("arctic").propagate:
            logger.addHandler(caplog.handler)
            undo.append(lambda: logger.removeHandler(caplog.handler))
        return caplog

    yield capture
    for step in reversed(undo):
        step()
