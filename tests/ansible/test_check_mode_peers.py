"""``ansible-playbook --check --diff`` shows the whole change: every peer's kernel diff, under its own header.

Two real agents (``harness.arcticlab.ArcticPair``: kernel changes and data planes on), agent-b hanging service
MACVLANs on its LAN ``eth-net100``. A playbook asks agent-a, in check mode, for a service from agent-a to agent-b
with its own interface and address. The module runs inside the lab's ``ctl`` namespace (its interpreter is
``ip netns exec <ctl> python``), so the controller never sends a packet to a lab address.

Proves: the printed diff has agent-a's part (nftables rule, data plane) and agent-b's part (the MACVLAN on
eth-net100 with 192.168.100.10/24) each under a header naming the peer, both for the same planned service; and
nothing was created on either peer (no service in either store; nftables, links, addresses and rules of both
hosts exactly as before).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import VENV_BIN, ansible_env, why_no_ansible_lab
from harness import Lab, root_namespace_untouched, transit
from harness.arcticlab import ArcticPair

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SERVICE_IP = "192.168.100.10/24"
PLAY = """
- hosts: ctl
  gather_facts: false
  module_defaults:
    group/arctic.fleet.fleet:
      agent_url: "{{ agent_url }}"
      client_id: "{{ client_id }}"
      client_secret: "{{ client_secret }}"
  tasks:
    - name: A web service from agent-a to agent-b with its own interface on b
      arctic.fleet.arctic_service:
        name: checked-web
        source_peer: agent-a
        target_peer: agent-b
        requires_interface: true
        desired_ipv4_cidr: SERVICE_IP
        routes:
          - {dest_cidr: 192.168.100.0/24, priority: 100}
""".replace("SERVICE_IP", SERVICE_IP)


@pytest.fixture(scope="module")
def pair() -> Iterator[ArcticPair]:
    reason = why_no_ansible_lab()
    if reason:
        pytest.skip(reason)
    with root_namespace_untouched("the check-mode playbook test"), Lab(prefix="arcck") as lab:
        t = transit(lab)
        with ArcticPair.start(t, per_agent={"b": {"lan_interface": "eth-net100"}}) as p:
            yield p


def kernel_state(pair: ArcticPair) -> dict[str, str]:
    """What Arctic could create on each peer: nftables, links (MACVLANs included), addresses, policy rules."""
    hosts = {"a": pair.t.agent_a, "b": pair.t.agent_b}
    commands = {"nft": ("nft", "list", "ruleset"), "links": ("ip", "-d", "-o", "link", "show"),
                "addresses": ("ip", "-o", "addr", "show"), "rules": ("ip", "rule", "show")}
    return {f"{name} {what}": host.run(*argv, check=False).stdout
            for name, host in hosts.items() for what, argv in commands.items()}


def run_check_diff(pair: ArcticPair, workdir: Path) -> subprocess.CompletedProcess[str]:
    wrapper = workdir / "py-ctl"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/sbin/ip netns exec {pair.t.ctl.name} {VENV_BIN / "python"} "$@"\n')
    wrapper.chmod(0o755)
    inventory = workdir / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"ctl": {
        "ansible_connection": "local", "ansible_python_interpreter": str(wrapper)}}}}))
    playbook = workdir / "check.yml"
    playbook.write_text(PLAY)
    extra = {"agent_url": pair.agents["a"].url, "client_id": pair.creds["a"]["client_id"],
             "client_secret": pair.creds["a"]["client_secret"]}
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "--check",
                           "--diff", "-e", json.dumps(extra)], env=ansible_env(), cwd=workdir,
                          capture_output=True, text=True, timeout=180, check=False)


def sections(stdout: str) -> dict[str, str]:
    """The printed diff cut at the per-peer headers: header -> the lines under it."""
    parts = re.split(r"^(=== .+ ===)$", stdout, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\nchanged: [")[0] for i in range(1, len(parts) - 1, 2)}


def added(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]


def test_check_diff_names_both_peers_kernel_changes_and_creates_nothing(pair, tmp_path):
    before = kernel_state(pair)

    proc = run_check_diff(pair, tmp_path)

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^changed: \[ctl\]", proc.stdout, re.MULTILINE), proc.stdout[-4000:]
    shown = sections(proc.stdout)
    a_header = f"=== agent-a ({pair.peer_id('a')}): kernel changes ==="
    b_header = f"=== agent-b ({pair.peer_id('b')}): kernel changes ==="
    assert list(shown) == [a_header, b_header], proc.stdout[-4000:]
    a_part, b_part = added(shown[a_header]), added(shown[b_header])
    # agent-a, the source, intercepts: an nftables TPROXY rule for the route and the service in its data plane
    rule = next((ln for ln in a_part if "ip daddr 192.168.100.0/24" in ln and "tproxy" in ln), None)
    assert rule is not None, shown[a_header]
    planned_id = re.search(r'comment "arctic (svc_\w+) route 1"', rule).group(1)
    assert any(f'"id": "{planned_id}"' in ln for ln in a_part)
    assert not any("MACVLAN" in ln for ln in a_part)
    # agent-b, the target, makes the service's MACVLAN on its LAN, with the requested address
    assert f"+    # service {planned_id}: MACVLAN on eth-net100" in b_part, shown[b_header]
    assert f'+        - "{SERVICE_IP}"' in b_part
    assert not any("tproxy" in ln for ln in b_part)

    # nothing was created on either peer
    assert pair.api("GET", "/v1/services", on="a") == [] and pair.api("GET", "/v1/services", on="b") == []
    assert kernel_state(pair) == before
