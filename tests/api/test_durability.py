"""kill -9 mid-write: every write the API acknowledged is there after a restart (SQLite WAL + FULL sync)."""

from __future__ import annotations

import threading
import time

import requests


def test_acknowledged_writes_survive_kill_9(bootstrapped_agent):
    agent = bootstrapped_agent
    headers = {"Authorization": f"Bearer {agent.token()}"}
    target = agent.add_remote_peer("agent-b")
    acknowledged: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        session = requests.Session()
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline and len(acknowledged) < 400:
            try:
                resp = session.post(agent.url + "/v1/services", json={"target_peer_id": target}, headers=headers,
                                    timeout=5)
            except requests.RequestException:
                return
            if resp.status_code == 201:
                acknowledged.append(resp.json()["id"])

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    while len(acknowledged) < 40 and any(t.is_alive() for t in threads):
        time.sleep(0.02)
    agent.kill()  # SIGKILL while writers are mid-request
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acknowledged) >= 40

    agent.start()
    headers = {"Authorization": f"Bearer {agent.token()}"}
    stored = {s["id"] for s in requests.get(agent.url + "/v1/services", headers=headers, timeout=10).json()}
    missing = [sid for sid in acknowledged if sid not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"


def test_agent_refuses_to_start_when_its_licence_no_longer_verifies(bootstrapped_agent, tmp_path):
    import yaml
    from agentkit import Issuer

    agent = bootstrapped_agent
    agent.stop()
    config = yaml.safe_load(agent.config_file.read_text())
    config["license"]["issuer_public_keys"] = [Issuer.generate().public_b64]
    agent.config_file.write_text(yaml.safe_dump(config))
    try:
        agent.start(timeout=10)
        raise AssertionError("agent started with an untrusted licence")
    except RuntimeError as err:
        assert "failed verification" in str(err)
    assert agent.proc.returncode == 1


def test_sigterm_stops_cleanly_and_recovery_token_changes_per_start(bootstrapped_agent):
    agent = bootstrapped_agent
    first = agent.recovery_token
    assert (agent.recovery_file.stat().st_mode & 0o777) == 0o600
    assert agent.stop() == 0
    agent.start()
    assert agent.recovery_token != first
    resp = requests.get(agent.url + "/v1/credentials", headers={"X-Arctic-Recovery": agent.recovery_token}, timeout=5)
    assert resp.status_code == 200
    resp = requests.get(agent.url + "/v1/credentials", headers={"X-Arctic-Recovery": first}, timeout=5)
    assert resp.status_code == 401
    assert '"recovery token used"' in agent.log_text() or "recovery token used" in agent.log_text()
