"""Fixtures shared by every test level."""

from __future__ import annotations

import os

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
