"""A real ``ansible-playbook`` run of arctic.fleet against the fake agent served on loopback.

Why, on top of the collection's unit tests: this goes through everything the unit tests stub out:
module packaging (AnsiballZ), the ``group/arctic.fleet.fleet`` action group in ``module_defaults``,
the ARCTIC_CLIENT_* environment fallbacks an AWX credential uses, the real ``fetch_url`` over HTTP, and
how ``--check --diff`` shows the agent's dry run. The agent is the collection's in-memory fake behind
``http.server`` on 127.0.0.1; the real agent is exercised by the Molecule scenarios.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")

pytestmark = pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-core is not installed")

PLAY = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/arctic.fleet.fleet:
      agent_url: "{{ agent_url }}"
  tasks:
    - name: Service with one inline route
      arctic.fleet.arctic_service:
        name: web
        target_peer: branch
        bandwidth_limit_mbps: "{{ limit }}"
        routes: [{source_cidr: 10.0.0.0/8, dest_cidr: 192.168.100.0/24}]
    - name: A second route on its own
      arctic.fleet.arctic_route:
        service: web
        dest_cidr: 192.168.200.0/24
        priority: 300
    - name: Read back
      arctic.fleet.arctic_service_info:
        service: web
      register: web
    - name: Report
      ansible.builtin.debug:
        msg: "ROUTES={{ web.service.routes | default([]) | length }}"
"""


def _load_fake_agent_module():
    """Load the collection's fake agent by path (it is standalone) without importing ansible_collections."""
    path = COLLECTIONS / "ansible_collections" / "arctic" / "fleet" / "tests" / "unit" / "plugins" / "fake_agent.py"
    spec = importlib.util.spec_from_file_location("arctic_fleet_fake_agent", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served_agent():
    """The fake agent answering HTTP on an ephemeral loopback port; yields (agent, url)."""
    agent = _load_fake_agent_module().FakeAgent()
    agent.clients = {"cli_awx": "sec_awx"}

    class Handler(BaseHTTPRequestHandler):
        def _relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            response, info = agent.fetch_url(None, "http://agent" + self.path, data=data,
                                             headers={k.title(): v for k, v in self.headers.items()},
                                             method=self.command)
            body = response.read() if response else info.get("body", b"")
            self.send_response(info["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield agent, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def play(tmp_path: Path, url: str, limit: int, *flags: str) -> tuple[int, str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ARCTIC_CLIENT_ID="cli_awx",
        ARCTIC_CLIENT_SECRET="sec_awx",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
    )
    extra = json.dumps({"agent_url": url, "limit": limit})
    proc = subprocess.run(
        [str(PLAYBOOK_BIN), str(playbook), "-e", extra, *flags],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    changed = re.search(r"localhost\s*: ok=\d+\s+changed=(\d+)", output)
    assert changed, output[-3000:]
    return int(changed.group(1)), output


def test_playbook_converges_then_is_idempotent_and_check_mode_writes_nothing(served_agent, tmp_path):
    agent, url = served_agent

    first, output = play(tmp_path, url, 100)
    assert first == 2
    assert "ROUTES=2" in output
    web = agent.service_named("web")
    assert web["bandwidth_limit_mbps"] == 100
    api_calls = [c for c in agent.calls if c.path != "/v1/oauth/token"]
    assert all(c.headers["Authorization"].startswith("Bearer minted-") for c in api_calls)  # ARCTIC_CLIENT_* used

    second, _ = play(tmp_path, url, 100)
    assert second == 0

    writes_before = len(agent.writes)
    checked, output = play(tmp_path, url, 50, "--check", "--diff")
    assert checked == 1
    assert len(agent.writes) == writes_before
    assert web["bandwidth_limit_mbps"] == 100
    assert '-    "bandwidth_limit_mbps": 100,' in output and '+    "bandwidth_limit_mbps": 50,' in output
    assert "+++ planned" in output  # the agent's kernel diff from POST /v1/plan
