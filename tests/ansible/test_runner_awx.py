"""``playbooks/services.yml`` driven through ``ansible_runner.run()`` the way AWX runs a job template.

AWX hands ansible-runner a private data dir, the synced project (this repository), an inventory it renders
from its database, and environment variables injected by credentials (the "Arctic agent" credential type of
docs/awx.md: ARCTIC_AGENT_URL, ARCTIC_CLIENT_ID, ARCTIC_CLIENT_SECRET); it then reads the run's status,
stats and events. Here the inventory's one host is the lab's ``ctl`` (modules run in its namespace through
the interpreter wrapper, like an EE with a route to the agents) and the services are inventory variables.
"""

from __future__ import annotations

import json
from pathlib import Path

import ansible_runner
import fleetlab
import pytest
from conftest import REPO, ansible_env
from harness import http

pytestmark = pytest.mark.lab

SERVICES = [
    {"name": "awx-web", "source_peer": "agent-a", "target_peer": "agent-b", "bandwidth_limit_mbps": 50,
     "routes": [{"source_cidr": "10.0.0.0/8", "dest_cidr": "192.168.100.0/24", "priority": 100},
                {"source_cidr": "10.1.0.0/16", "dest_cidr": "192.168.100.0/24", "priority": 200}]},
]


def awx_inventory(lab: fleetlab.FleetLab, services: list, purge: bool) -> dict:
    """What AWX renders for a job: hosts, their connection variables and the group's variables."""
    return {"all": {"children": {"arctic_api": {
        "hosts": {"ctl": {"ansible_connection": "local",
                          "ansible_python_interpreter": str(lab.dir / "bin" / "py-ctl")}},
        "vars": {"arctic_services": services, "arctic_purge_routes": purge},
    }}}}


def run_job(lab: fleetlab.FleetLab, tmp_path: Path, services: list, purge: bool = False) -> ansible_runner.Runner:
    creds = lab.credentials["agent-a"]
    env = ansible_env(ARCTIC_AGENT_URL=lab.agents["agent-a"].url, ARCTIC_CLIENT_ID=creds["client_id"],
                      ARCTIC_CLIENT_SECRET=creds["client_secret"])
    job_dir = tmp_path / f"job{len(list(tmp_path.iterdir()))}"
    job_dir.mkdir()
    return ansible_runner.run(
        private_data_dir=str(job_dir), project_dir=str(REPO),
        playbook="playbooks/services.yml", inventory=awx_inventory(lab, services, purge), envvars=env,
        quiet=True, suppress_env_files=True, timeout=120)


def task_results(runner: ansible_runner.Runner, task: str) -> list[dict]:
    return [e["event_data"] for e in runner.events
            if e.get("event") == "runner_on_ok" and e.get("event_data", {}).get("task") == task]


def stored_routes(lab: fleetlab.FleetLab, name: str) -> list[tuple]:
    headers = {"Authorization": f"Bearer {lab.token('agent-a')}"}
    url = lab.agents["agent-a"].url
    service = next(s for s in http(lab.hosts["ctl"], "GET", f"{url}/v1/services", headers=headers).json()
                   if s["name"] == name)
    detail = http(lab.hosts["ctl"], "GET", f"{url}/v1/services/{service['id']}", headers=headers).json()
    return sorted((r["source_cidr"], r["dest_cidr"], r["priority"]) for r in detail["routes"])


def test_job_creates_the_declared_services_then_changes_nothing_then_purges_undeclared_routes(fleet_lab, tmp_path):
    first = run_job(fleet_lab, tmp_path, SERVICES)
    assert (first.status, first.rc) == ("successful", 0), first.stdout.read()[-3000:]
    assert first.stats["changed"] == {"ctl": 1}
    assert first.stats["failures"] == {} and first.stats["dark"] == {}
    events = [e["event"] for e in first.events]
    assert events[0] == "playbook_on_start" and events[-1] == "playbook_on_stats"
    [declared] = task_results(first, "Services are as declared")
    assert declared["res"]["changed"] is True
    assert [r["item"]["name"] for r in declared["res"]["results"]] == ["awx-web"]
    assert stored_routes(fleet_lab, "awx-web") == [("10.0.0.0/8", "192.168.100.0/24", 100),
                                                   ("10.1.0.0/16", "192.168.100.0/24", 200)]
    secret = fleet_lab.credentials["agent-a"]["client_secret"]
    assert secret not in json.dumps(list(first.events)), "the credential's secret leaked into the job events"

    again = run_job(fleet_lab, tmp_path, SERVICES)
    assert (again.status, again.rc) == ("successful", 0)
    assert again.stats["changed"] == {}

    fewer = [dict(SERVICES[0], routes=SERVICES[0]["routes"][:1])]
    kept = run_job(fleet_lab, tmp_path, fewer, purge=False)
    assert kept.stats["changed"] == {}  # without purge an undeclared route stays
    assert len(stored_routes(fleet_lab, "awx-web")) == 2

    purged = run_job(fleet_lab, tmp_path, fewer, purge=True)
    assert (purged.status, purged.rc) == ("successful", 0)
    assert purged.stats["changed"] == {"ctl": 1}
    assert stored_routes(fleet_lab, "awx-web") == [("10.0.0.0/8", "192.168.100.0/24", 100)]
