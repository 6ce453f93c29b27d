"""The Molecule scenarios pass: converge, Molecule's idempotence step, and a verify that checks the lab.

Each scenario (``molecule/<name>``) builds its own lab in create and tears it down in destroy
(``tests/ansible/fleetlab.py``); its hosts are lab network namespaces. Two tests read one Molecule run:

* ``..._converges_idempotently`` -- the run succeeded and the idempotence step reported no change;
* ``..._verify_sees_traffic_and_kernel_state`` -- the traffic and kernel checks really ran.
"""

from __future__ import annotations

import re
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, VENV_BIN, ansible_env, why_no_ansible_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SCENARIOS = ("service", "route", "transparent", "fleet")
BUDGET_SECONDS = 90  # per scenario (issue 6); exceeding it is reported, not failed: timing varies by machine
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class MoleculeRun:
    scenario: str
    returncode: int
    output: str
    seconds: float

    def step(self, name: str) -> str | None:
        """Molecule's verdict on one step of the sequence, e.g. 'Successful' or 'Failed'."""
        found = re.findall(rf"{self.scenario} (?:➜|>) {name}: Executed: (\w+)", self.output)
        return found[-1] if found else None

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


_runs: dict[str, MoleculeRun] = {}


def run_scenario(scenario: str, wheel: Path) -> MoleculeRun:
    if scenario not in _runs:
        start = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=REPO,
                              env=ansible_env(ARCTIC_AGENT_WHEEL=str(wheel)), capture_output=True, text=True,
                              timeout=300, check=False)
        seconds = time.monotonic() - start
        _runs[scenario] = MoleculeRun(scenario, proc.returncode, ANSI.sub("", proc.stdout + proc.stderr), seconds)
        print(f"molecule test -s {scenario}: rc={proc.returncode} in {seconds:.0f}s")
        if seconds > BUDGET_SECONDS:
            warnings.warn(f"molecule scenario {scenario} took {seconds:.0f}s (budget {BUDGET_SECONDS}s)", stacklevel=1)
    return _runs[scenario]


@pytest.fixture(params=SCENARIOS)
def molecule_run(request: pytest.FixtureRequest, agent_wheel: Path) -> MoleculeRun:
    reason = why_no_ansible_lab()
    if reason:
        pytest.skip(reason)
    if not (VENV_BIN / "molecule").exists():
        pytest.skip("molecule is not installed (pip install -e '.[test]')")
    return run_scenario(request.param, agent_wheel)


@pytest.mark.timeout(330)
def test_scenario_converges_idempotently(molecule_run: MoleculeRun):
    assert molecule_run.step("converge") == "Successful", molecule_run.tail()
    assert molecule_run.step("idempotence") == "Successful", molecule_run.tail()
    assert molecule_run.step("destroy") == "Successful", molecule_run.tail()


@pytest.mark.timeout(330)
def test_scenario_verify_sees_traffic_and_kernel_state(molecule_run: MoleculeRun):
    assert molecule_run.returncode == 0, molecule_run.tail()
    assert molecule_run.step("verify") == "Successful", molecule_run.tail()
    assert "TASK [VERIFY" in molecule_run.output, "the verify playbook asserted nothing"
    assert "ok: [ctl -> cl]" in molecule_run.output, "no probe connection from the client host succeeded"
