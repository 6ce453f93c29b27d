"""The agent role's unit template and the packaged unit file agree, and the unit passes systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "collections" / "ansible_collections" / "arctic" / "fleet" / "roles" / "agent"
PACKAGED_UNIT = REPO / "packaging" / "systemd" / "arctic.service"


def render_unit(venv: str, config_file: str, data_dir: str = "/var/lib/arctic", config_dir: str = "/etc/arctic") -> str:
    template = (ROLE / "templates" / "arctic.service.j2").read_text()
    return jinja2.Template(template, keep_trailing_newline=True, undefined=jinja2.StrictUndefined).render(
        arctic_agent_venv=venv, arctic_agent_config_file=config_file, arctic_agent_data_dir=data_dir,
        arctic_agent_config_dir=config_dir)


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_role_renders_the_packaged_unit_with_its_default_paths():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert defaults["arctic_agent_prefix"] == "/opt/arctic" and defaults["arctic_agent_config_dir"] == "/etc/arctic"
    rendered = render_unit("/opt/arctic/venv", "/etc/arctic/agent.yaml")
    assert unit_lines(rendered) == unit_lines(PACKAGED_UNIT.read_text())
    assert "ExecStart=/opt/arctic/venv/bin/arctic-agent run --config /etc/arctic/agent.yaml" in rendered


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify_when_its_binary_exists(tmp_path):
    agent = tmp_path / "venv" / "bin" / "arctic-agent"
    agent.parent.mkdir(parents=True)
    agent.write_text("#!/bin/sh\n")
    agent.chmod(0o755)
    unit = tmp_path / "arctic.service"
    unit.write_text(render_unit(str(tmp_path / "venv"), "/etc/arctic/agent.yaml"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and f"{unit}:" not in proc.stderr, proc.stderr

    agent.unlink()  # the role's check must catch a unit whose ExecStart is missing
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "is not executable" in proc.stderr
