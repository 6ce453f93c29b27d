"""The agent tells systemd the truth (issue 15): a real agent managing a lab host's kernel (``apply_kernel: true``,
data plane on) with NOTIFY_SOCKET pointed at a socket the test binds and reads.

Topology ``harness.cluster(lab, 1)``: host a1 (198.18.0.1) runs the agent, ``ctl`` (198.18.0.250) makes the API
calls. The socket is a file-system socket (abstract ones are per network namespace) in the lab's run dir. The agent's
data plane is stopped with it (``keep_on_stop: false``) and, should it outlive the agent, by its checked pidfile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from agentkit import Issuer
from harness import AgentProcess, Cluster, Lab, agent_binary, cluster, http, lab_agent, root_namespace_untouched
from harness.arcticlab import stop_dataplane
from sdnotifykit import Message, NotifyListener

pytestmark = pytest.mark.lab

WATCHDOG_USEC = 1_000_000


def is_ready(message: Message) -> bool:
    return message.get("READY") == "1"


@pytest.fixture
def lab_with_socket() -> Iterator[tuple[Cluster, NotifyListener]]:
    with root_namespace_untouched("the sd_notify lab test"), Lab(prefix="arsd") as lab:
        topo = cluster(lab, 1)
        with NotifyListener(str(lab.run_dir / "notify")) as listener:
            yield topo, listener


@dataclass
class NotifiedAgent:
    proc: AgentProcess
    topo: Cluster
    notify: NotifyListener
    issuer: Issuer

    def api(self, method: str, path: str, token: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http(self.topo.ctl, method, self.proc.url + path, headers=headers, **kw)


@pytest.fixture
def agent(lab_with_socket) -> Iterator[NotifiedAgent]:
    """The agent on a1, started (not bootstrapped) with NOTIFY_SOCKET and a 1 s WATCHDOG_USEC."""
    topo, listener = lab_with_socket
    host = topo.agents[0]
    command = ["env", f"NOTIFY_SOCKET={listener.env_value}", f"WATCHDOG_USEC={WATCHDOG_USEC}",
               agent_binary(), "run", "--config", "{config}"]
    issuer = Issuer.generate()
    proc = lab_agent(host, "agent", advertise=topo.address(host), issuer_public_keys=[issuer.public_b64],
                     command=command, extra_config={"reconcile_interval": 300,  # no periodic run to muddle `last`
                                                    "dataplane": {"keep_on_stop": False, "drain_seconds": 1}})
    try:
        yield NotifiedAgent(proc, topo, listener, issuer)
    finally:
        try:
            proc.stop()
        finally:
            stop_dataplane(proc)


def test_the_agent_sends_ready_only_after_its_first_reconcile_and_its_data_plane(agent):
    proc, notify = agent.proc, agent.notify
    # Not bootstrapped: there is nothing to reconcile and no data plane yet, and the agent is READY all the same.
    first = notify.wait_for("READY=1 of the agent not bootstrapped yet", is_ready, timeout=60)
    assert first["STATUS"] == "ready: waiting for bootstrap (POST /v1/bootstrap)"
    resp = agent.api("POST", "/v1/bootstrap", json={"license": agent.issuer.licence(), "name": "agent-a"})
    assert resp.status_code == 201, resp.text
    creds = resp.json()
    notify.wait_for("the status of a bootstrapped agent with its data plane up",
                    lambda m: m.get("STATUS") == "ready: 0 services, data plane up", timeout=60)

    # Restarted bootstrapped: READY waits for the first reconcile run and for the data plane it configured.
    proc.stop()
    stop_dataplane(proc)
    notify.wait_for("STOPPING=1", lambda m: m.get("STOPPING") == "1", timeout=10)
    mark = len(notify.messages)
    proc.start()
    ready = notify.wait_for("READY=1 after the restart", is_ready, timeout=90)
    assert ready["STATUS"] == "ready: 0 services, data plane up", "READY came before the data plane was up"
    statuses = [m["STATUS"] for m in notify.messages[mark:notify.messages.index(ready)] if "STATUS" in m.fields]
    assert statuses[0] == "starting: opening the store", statuses
    assert any(s.startswith("starting: waiting for") for s in statuses[1:]), statuses

    token = agent.api("POST", "/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": creds["client_id"],
        "client_secret": creds["client_secret"]}).json()["access_token"]
    last = agent.api("GET", "/v1/plan", token).json()["last_reconcile"]
    assert last is not None and "start-up" in last["reason"], f"not the start-up run: {last}"
    ended = last["at"] + last["seconds"]  # both rounded to the millisecond
    assert ended <= ready.received_at + 0.002, f"READY read at {ready.received_at}, first run ended at {ended}"
    checks = agent.api("GET", "/readyz").json()["checks"]
    assert checks["reconcile"] == "ok" and checks["dataplane"] == "ok", checks
    assert [m for m in notify.messages[mark:] if is_ready(m)] == [ready], "READY is sent once per start"


def test_the_kernel_managing_agent_pings_the_watchdog_well_within_watchdog_usec(agent):
    agent.notify.wait_for("READY=1", is_ready, timeout=60)
    pings = [agent.notify.wait_for("WATCHDOG=1", lambda m: "WATCHDOG" in m.fields, timeout=10) for _ in range(4)]
    gaps = [b.received_at - a.received_at for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < WATCHDOG_USEC / 1e6, f"pings {gaps} s apart: systemd would have killed the agent"
