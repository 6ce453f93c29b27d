"""A real ``arctic-agent run`` process (127.0.0.1, ``apply_kernel: false``) under a stand-in for systemd: the test
binds the NOTIFY_SOCKET and reads what the agent says. The kernel-managing agent is in tests/lab/test_systemd_notify.py.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from agentkit import AgentProcess
from sdnotifykit import NotifyListener

WATCHDOG_USEC = 1_000_000  # 1 s: a ping at least every 0.5 s


@pytest.fixture
def notify_socket(monkeypatch) -> Iterator[NotifyListener]:
    with NotifyListener.abstract() as listener:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)  # AgentProcess passes the environment on
        monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield listener


@pytest.fixture
def notified_agent(tmp_path, issuer, notify_socket) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path / "agent", issuer).start()
    yield proc
    proc.stop()


def test_an_agent_without_kernel_management_is_ready_once_its_api_listens(notified_agent, notify_socket):
    ready = notify_socket.wait_for("READY=1", lambda m: m.get("READY") == "1")
    assert ready["STATUS"] == "ready: waiting for bootstrap (POST /v1/bootstrap)"
    before = notify_socket.messages[:notify_socket.messages.index(ready)]
    assert {"STATUS": "starting: opening the store"} in [m.fields for m in before], "no STATUS before READY"

    notified_agent.bootstrap()
    changed = notify_socket.wait_for("the status after bootstrap", lambda m: "STATUS" in m.fields)
    assert changed.fields == {"STATUS": "ready: kernel not managed (apply_kernel: false)"}
    assert [m for m in notify_socket.messages if "READY" in m.fields] == [ready], "READY is sent once"


def test_the_watchdog_is_pinged_well_within_watchdog_usec(notified_agent, notify_socket):
    pings = [notify_socket.wait_for("WATCHDOG=1", lambda m: "WATCHDOG" in m.fields, timeout=10) for _ in range(4)]
    gaps = [b.received_at - a.received_at for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"pings {gaps} s apart: systemd would have killed the agent"


def test_sigterm_says_stopping_before_the_agent_exits(notified_agent, notify_socket):
    notify_socket.wait_for("READY=1", lambda m: m.get("READY") == "1")
    assert notified_agent.stop(signal.SIGTERM) == 0
    stopping = notify_socket.wait_for("STOPPING=1", lambda m: m.get("STOPPING") == "1", timeout=5)
    assert stopping["STATUS"] == "stopping"
