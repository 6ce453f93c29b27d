"""Fixtures of the Ansible tests that need the lab: the agent wheel (built once) and a lab with agents.

The lab tests here are marked ``lab`` (root, network namespaces); everything Ansible runs stays in the lab's
namespaces through the interpreter wrappers of ``fleetlab.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fleetlab  # noqa: E402

VENV_BIN = Path(sys.executable).parent
LAB_INVENTORY = REPO / "playbooks" / "inventories" / "lab"


def why_no_ansible_lab() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    if shutil.which("ip") is None:
        return "lab tests need iproute2 (ip)"
    if not (VENV_BIN / "ansible-playbook").exists():
        return "ansible-core is not installed in this virtualenv"
    return None


def ansible_env(lab_dir: Path | None = None, **extra: str) -> dict:
    """Environment for ansible/molecule subprocesses: this venv first on PATH, this repo's collection, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCTIC_", "ANSIBLE_", "MOLECULE_"))}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
               ANSIBLE_NOCOLOR="1", NO_COLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_LOCALHOST_WARNING="False")
    for key in ("ARCTIC_AGENT_WHEEL", "ARCTIC_LAB_VENV"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if lab_dir is not None:
        env["ARCTIC_LAB_DIR"] = str(lab_dir)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This repository's agent package, built once per session (``$ARCTIC_AGENT_WHEEL`` when given)."""
    given = os.environ.get("ARCTIC_AGENT_WHEEL")
    if given:
        return Path(given)
    return fleetlab.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleetlab.FleetLab]:
    """The transit lab with agent-a and agent-b running, bootstrapped and joined (torn down for sure)."""
    reason = why_no_ansible_lab()
    if reason:
        pytest.skip(reason)
    with fleetlab.FleetLab(tmp_path_factory.mktemp("lab"), agents=True) as lab:
        yield lab
