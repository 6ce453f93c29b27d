"""An operator's ad-hoc ``ansible -m arctic.fleet.arctic_route`` against a lab host.

The module runs inside agent-a's namespace (the lab inventory's interpreter wrapper) and talks to the agent on
that namespace's loopback (``agent_url`` default); the credential comes from the environment, as an AWX
credential would inject it. Proves: a first call changes the route, an identical second call reports
``changed: false``, and ``--check --diff`` reports ``changed: true`` with the diff while the agent keeps its state.
"""

from __future__ import annotations

import json
import re
import subprocess

import fleetlab
import pytest
from conftest import LAB_INVENTORY, VENV_BIN, ansible_env
from harness import http

pytestmark = pytest.mark.lab

SERVICE = "adhoc-web"
ROUTE = "service=adhoc-web source_cidr=10.0.0.0/8 dest_cidr=192.168.100.0/24 priority={priority}"


def adhoc(lab: fleetlab.FleetLab, module: str, args: str, *flags: str) -> dict:
    """Run ``ansible agent-a -m MODULE -a ARGS`` and return agent-a's result (``agent-a | CHANGED => {...}``)."""
    creds = lab.credentials["agent-a"]
    env = ansible_env(lab.dir, ARCTIC_CLIENT_ID=creds["client_id"], ARCTIC_CLIENT_SECRET=creds["client_secret"],
                      ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal")
    proc = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(LAB_INVENTORY), "agent-a", "-m", module, "-a", args,
                           *flags], env=env, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"^agent-a \| [A-Z!]+ => (\{.*\})\s*$", proc.stdout, re.MULTILINE | re.DOTALL)
    if not found:
        pytest.fail(f"ansible printed no result (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(found.group(1))
    result["_stdout"] = proc.stdout
    assert proc.returncode == 0 and not result.get("failed"), json.dumps(result, indent=2)[-3000:]
    return result


def routes_in_agent(lab: fleetlab.FleetLab) -> list[dict]:
    """The service's routes as the agent stores them, read from inside ctl (not through Ansible)."""
    headers = {"Authorization": f"Bearer {lab.token('agent-a')}"}
    url = lab.agents["agent-a"].url
    services = http(lab.hosts["ctl"], "GET", f"{url}/v1/services", headers=headers).json()
    service_id = next(s["id"] for s in services if s["name"] == SERVICE)
    return http(lab.hosts["ctl"], "GET", f"{url}/v1/services/{service_id}", headers=headers).json()["routes"]


def test_route_changes_once_then_reports_no_change_and_check_mode_only_predicts(fleet_lab):
    adhoc(fleet_lab, "arctic.fleet.arctic_service", f"name={SERVICE} source_peer=agent-a target_peer=agent-b")

    first = adhoc(fleet_lab, "arctic.fleet.arctic_route", ROUTE.format(priority=100))
    assert first["changed"] is True
    assert first["route"]["priority"] == 100

    second = adhoc(fleet_lab, "arctic.fleet.arctic_route", ROUTE.format(priority=100))
    assert second["changed"] is False

    stored = routes_in_agent(fleet_lab)
    checked = adhoc(fleet_lab, "arctic.fleet.arctic_route", ROUTE.format(priority=250), "--check", "--diff")
    assert checked["changed"] is True
    assert checked["plan"]["changes"] == [{"op": "route.update", "service_id": checked["route"]["service_id"],
                                           "route_id": stored[0]["id"], "body": {"priority": 250}}]
    assert routes_in_agent(fleet_lab) == stored  # the agent's state is untouched
    # the diff as --diff shows it (the callback prints it above the result)
    assert '-    "priority": 100,' in checked["_stdout"] and '+    "priority": 250,' in checked["_stdout"]

    # a new route in check mode: the agent's dry run shows the nftables rule it would add, and adds nothing
    new_route = "service=adhoc-web dest_cidr=192.168.200.0/24 priority=300"
    predicted = adhoc(fleet_lab, "arctic.fleet.arctic_route", new_route, "--check", "--diff")
    assert predicted["changed"] is True and predicted["plan"]["available"] is True
    kernel = "\n".join(predicted["plan"]["kernel_diff"].values())
    assert any(ln.startswith("+") and "192.168.200.0/24" in ln and "tproxy" in ln for ln in kernel.splitlines()), kernel
    assert routes_in_agent(fleet_lab) == stored
