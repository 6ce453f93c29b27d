"""The systemd unit tells the truth: ``Type=notify`` with a watchdog, a sandbox that fits the agent, and the role's
template (rendered with the role's defaults) declaring exactly the packaged unit, both passing systemd-analyze."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from arctic.config import AgentConfig

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "collections" / "ansible_collections" / "arctic" / "fleet" / "roles" / "agent"
PACKAGED = REPO / "packaging" / "systemd" / "arctic.service"
TEMPLATE = ROLE / "templates" / "arctic.service.j2"
INSTALLED_AGENT = "/opt/arctic/venv/bin/arctic-agent"
AGENT = Path(sys.executable).parent / "arctic-agent"  # this venv's: systemd-analyze checks ExecStart exists


def role_defaults() -> dict:
    """The role's defaults with their ``{{ ... }}`` references resolved (what the role renders by default)."""
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()) | {"inventory_hostname": "agent-a"}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for _ in range(5):  # references are at most a few levels deep
        for key, value in values.items():
            if isinstance(value, str) and "{{" in value:
                # a reference to facts this test does not have (ansible_host) stays: the unit does not use it
                with contextlib.suppress(jinja2.UndefinedError):
                    values[key] = env.from_string(value).render(values)
    return values


def rendered_template() -> str:
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(
        TEMPLATE.read_text())
    return template.render(role_defaults())


def section(text: str, name: str) -> list[tuple[str, str]]:
    """(key, value) of each assignment in ``[name]``, in order (comments and blank lines left out)."""
    out, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == name:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def service(text: str) -> dict[str, str]:
    pairs = section(text, "Service")
    assert len({k for k, _ in pairs}) == len(pairs), "a [Service] key is given twice"
    return dict(pairs)


UNITS = {"packaged": lambda: PACKAGED.read_text(), "role template": rendered_template}


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_waits_for_ready_and_restarts_an_agent_that_stops_pinging(unit):
    svc = service(UNITS[unit]())
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["WatchdogSec"] == "30s" and svc["TimeoutStartSec"] == "90" and svc["Restart"] == "on-failure"
    assert svc["ExecStart"] == f"{INSTALLED_AGENT} run --config /etc/arctic/agent.yaml"


@pytest.mark.parametrize("unit", UNITS)
def test_stopping_or_restarting_the_agent_signals_the_agent_only_so_the_data_plane_keeps_its_connections(unit):
    """``mixed`` or ``control-group`` would end the data plane (and every live connection) with the agent."""
    assert service(UNITS[unit]())["KillMode"] == "process"


@pytest.mark.parametrize("unit", UNITS)
def test_the_sandbox_leaves_the_agent_what_it_writes_and_the_network_capabilities_only(unit):
    svc = service(UNITS[unit]())
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime"):
        assert svc[key] == "yes", key
    assert svc["ProtectSystem"] == "strict"
    writable = svc["ReadWritePaths"].split()
    defaults, role = AgentConfig(), role_defaults()
    assert {str(defaults.data_dir), str(defaults.recovery_token_file.parent)} <= set(writable), \
        "the agent's data dir and the recovery token's dir must stay writable"
    assert {role["arctic_agent_data_dir"], role["arctic_agent_config_dir"]} <= set(writable)
    assert "ProtectKernelTunables" not in svc, "the agent writes /proc/sys/net/* (forwarding, rp_filter)"
    assert "RestrictNamespaces" not in svc, "the qdisc probe runs tc in a throw-away network namespace"
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK",
                                                             "AF_PACKET"}
    assert set(svc["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE",
                                                           "CAP_SYS_ADMIN"}
    assert "AmbientCapabilities" not in svc and "User" not in svc, "the agent runs as root"


def test_the_role_template_with_its_defaults_is_the_packaged_unit():
    packaged, rendered = PACKAGED.read_text(), rendered_template()
    for name in ("Unit", "Service", "Install"):
        assert section(rendered, name) == section(packaged, name), f"[{name}] differs: the two units drifted"


def verify(unit_text: str, directory: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify`` on the unit (ExecStart pointed at this venv's agent): exit code and the lines of
    its output about this unit (it may also warn about other units of the machine it runs on)."""
    unit = directory / "arctic.service"
    unit.write_text(unit_text.replace(INSTALLED_AGENT, str(AGENT)))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_LEVEL": "notice"})
    lines = (proc.stdout + proc.stderr).splitlines()
    return proc.returncode, [line for line in lines if "arctic.service" in line]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing_to_say_about_the_unit(unit, tmp_path):
    assert AGENT.exists(), f"{AGENT} is missing: install the project in this venv"
    code, about_unit = verify(UNITS[unit](), tmp_path)
    assert code == 0 and about_unit == [], "\n".join(about_unit)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_verify_check_would_see_a_bad_line(tmp_path):
    text = PACKAGED.read_text().replace("NotifyAccess=main", "NotifyAccess=main\nWatchdogSecs=30s")
    _, about_unit = verify(text, tmp_path)
    assert any("WatchdogSecs" in line for line in about_unit), about_unit
