"""The lab harness is safe by construction and always cleans up after itself."""

from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from harness import (
    AgentFailed,
    Lab,
    LabSafetyError,
    cleanup_stale,
    cluster,
    http,
    lab_agent,
    ping,
    tcp_connect,
    transit,
)
from harness.netns import MARKER_DIR, NETNS_DIR, is_dead, write_marker

pytestmark = pytest.mark.lab
TESTS_DIR = Path(__file__).resolve().parents[1]


def namespaces() -> set[str]:
    return {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def root_has_address(addr: str) -> bool:
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return f" {addr}/" in out


def links_in(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


# --- lifecycle ------------------------------------------------------------------------------------------------

def test_namespaces_and_veths_exist_inside_the_block_and_are_gone_after() -> None:
    with Lab(prefix="arc") as lab:
        a, b = lab.host("a"), lab.host("b")
        seg = lab.segment("core")
        if_a = lab.attach(a, seg, "198.18.0.1/24")
        wired = lab.wire(a, b, "10.0.0.1/8", "10.0.0.2/8")
        created = set(lab.namespaces)
        assert created == {f"arc{lab.runid}-a", f"arc{lab.runid}-b", f"arc{lab.runid}-core"}
        assert created <= namespaces()
        assert if_a == "eth-core" and wired == ("to-b", "to-a")
        assert {"lo", "eth-core", "to-b"} == links_in(a.name)
        assert {"br0", "p-a"} <= links_in(seg.name)
        assert not {"eth-core", "to-a", "to-b", "p-a", "br0"} & root_links(), "a veth end reached the root ns"
        assert all((MARKER_DIR / f"{ns}.owner").exists() for ns in created)
        run_dir = lab.run_dir
    assert not created & namespaces()
    assert not any((MARKER_DIR / f"{ns}.owner").exists() for ns in created)
    assert not run_dir.exists()


def test_teardown_happens_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab(prefix="arc") as lab:
        a = lab.host("a")
        lab.attach(a, lab.segment("core"), "198.18.0.1/24")
        proc = a.popen("sleep", "300")
        created = set(lab.namespaces)
        raise RuntimeError("boom")
    assert not created & namespaces()
    assert proc.returncode is not None


def test_processes_started_in_the_lab_are_dead_after_teardown(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    with Lab(prefix="arc") as lab:
        a = lab.host("a")
        plain = a.popen("sleep", "300")
        # Ignores SIGTERM and leaves a grandchild behind: needs the SIGKILL escalation on the process group.
        stubborn = a.popen("sh", "-c", f'trap "" TERM; sleep 300 & echo $! > {pidfile}; wait')
        # Started around the harness (not tracked): still swept, because it lives in a namespace the lab owns.
        untracked = subprocess.Popen(a.command("sleep", "300"), start_new_session=True)
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        grandchild = int(pidfile.read_text())
    assert plain.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert untracked.wait(timeout=5) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not is_dead(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_dead(grandchild)


@pytest.mark.parametrize("ending", ["sigterm", "exit"])
def test_a_process_that_is_terminated_or_exits_without_closing_still_tears_its_lab_down(ending: str) -> None:
    script = textwrap.dedent("""
        import sys, time
        from harness import Lab
        lab = Lab(prefix="arc")
        host = lab.host("h")
        proc = host.popen("sleep", "300")
        print(host.name, proc.pid, flush=True)
        if sys.argv[1] == "exit":
            sys.exit(0)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}
    owner = subprocess.Popen([sys.executable, "-c", script, ending], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ns, sleeper = owner.stdout.readline().split()
        assert ns in namespaces()
        if ending == "sigterm":
            owner.send_signal(signal.SIGTERM)
        code = owner.wait(timeout=20)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert code == (-signal.SIGTERM if ending == "sigterm" else 0)
    assert ns not in namespaces()
    assert is_dead(int(sleeper))


# --- connectivity and namespaces ------------------------------------------------------------------------------

def test_two_hosts_on_a_segment_can_ping_each_other_over_ipv4_and_ipv6(lab: Lab) -> None:
    seg = lab.segment("core")
    a, b = lab.host("a"), lab.host("b")
    lab.attach(a, seg, "198.18.0.1/24", "fd00:18::1/64")
    lab.attach(b, seg, "198.18.0.2/24", "fd00:18::2/64")
    assert ping(a, "198.18.0.2", timeout=2)
    assert ping(b, "fd00:18::1", timeout=2)
    assert "198.18.0.1/24" in a.run("ip", "-br", "addr").stdout


def test_hosts_have_forwarding_on_rp_filter_off_and_no_default_route(lab: Lab) -> None:
    a = lab.host("a")
    out = a.run("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter").stdout.split()
    assert out == ["1", "1", "0", "0"]
    assert "default" not in a.run("ip", "route").stdout + a.run("ip", "-6", "route").stdout


def test_call_runs_python_in_the_hosts_namespace_and_the_root_namespace_is_untouched(lab: Lab) -> None:
    a = lab.host("a")
    lab.attach(a, lab.segment("core"), "198.18.0.1/24")
    assert not root_has_address("198.18.0.1"), "precondition: the root namespace must not own the lab address"

    def bound_address(addr: str) -> str:
        with socket.socket() as sock:
            sock.bind((addr, 0))
            return sock.getsockname()[0]

    assert a.call(bound_address, "198.18.0.1") == "198.18.0.1"
    with pytest.raises(OSError) as refused:
        bound_address("198.18.0.1")  # in the root namespace: binding only, nothing is sent
    assert refused.value.errno == errno.EADDRNOTAVAIL
    ns_inode = os.stat(NETNS_DIR / a.name).st_ino
    assert a.call(lambda: os.stat("/proc/thread-self/ns/net").st_ino) == ns_inode
    assert os.stat("/proc/thread-self/ns/net").st_ino != ns_inode


# --- safety ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["8.8.8.0/24", "192.168.1.1/24", "10.0.0.1/7", "2001:db8::1/64"])
def test_an_address_outside_the_lab_ranges_is_refused_and_nothing_changes(lab: Lab, address: str) -> None:
    a, seg = lab.host("a"), lab.segment("core")
    with pytest.raises(LabSafetyError, match="outside the lab ranges"):
        lab.attach(a, seg, "198.18.0.1/24", address)
    with pytest.raises(LabSafetyError, match="outside the lab ranges"):
        lab.wire(a, lab.host("b"), address, "10.0.0.2/8")
    assert links_in(a.name) == {"lo"}
    assert links_in(seg.name) == {"lo", "br0"}


def test_routes_and_gateways_outside_the_lab_are_refused(lab: Lab) -> None:
    a = lab.host("a")
    lab.attach(a, lab.segment("core"), "198.18.0.1/24")
    for dest, via in [("0.0.0.0/0", "198.18.0.2"), ("192.168.1.0/24", "198.18.0.2"),
                      ("192.168.100.0/24", "192.168.1.1")]:
        with pytest.raises(LabSafetyError):
            a.route(dest, via=via)
    with pytest.raises(LabSafetyError, match="outside the lab ranges"):
        lab.default_via(a, "192.168.1.1")
    assert "default" not in a.run("ip", "route").stdout
    lab.default_via(a, "198.18.0.2")
    assert "default via 198.18.0.2" in a.run("ip", "route").stdout


def test_names_carry_prefix_and_run_id_and_bad_roles_are_refused(lab: Lab) -> None:
    assert lab.host("agent-a").name == f"arc{lab.runid}-agent-a"
    for role in ("Bad", "much-too-long-role", "a b", ""):
        with pytest.raises(LabSafetyError, match="role"):
            lab.host(role)
    with pytest.raises(ValueError, match="already used"):
        lab.host("agent-a")


# --- topologies -----------------------------------------------------------------------------------------------

def test_cluster_puts_agents_and_a_controller_on_one_segment(lab: Lab) -> None:
    c = cluster(lab, 3)
    assert [h.role for h in c.agents] == ["a1", "a2", "a3"]
    assert [c.address(h) for h in c.agents] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert c.address(c.ctl) == "198.18.0.250"
    assert all(ping(c.ctl, c.address(h), timeout=2) for h in c.agents)


def test_transit_routes_client_to_servers_only_when_direct_routing_is_enabled(lab: Lab) -> None:
    t = transit(lab)
    assert ping(t.cl, t.agent_a_lan_ip, timeout=2) and ping(t.ctl, t.agent_b_ip, timeout=2)
    no_route = t.agent_a.run("ip", "route", "get", t.s1_ip, check=False)
    assert no_route.returncode != 0 and "unreachable" in no_route.stderr
    assert not ping(t.cl, t.s1_ip) and not ping(t.cl, t.s2_ip)

    t.enable_direct_routing()
    assert ping(t.cl, t.s1_ip, timeout=2) and ping(t.cl, t.s2_ip, timeout=2)
    listener = f"import socket, time; s = socket.create_server(({t.s1_ip!r}, 8000)); time.sleep(60)"
    server = t.s1.popen(sys.executable, "-c", listener)
    deadline = time.monotonic() + 15
    while not tcp_connect(t.cl, t.s1_ip, 8000) and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.1)
    assert tcp_connect(t.cl, t.s1_ip, 8000)
    t.client_addr("10.1.0.50")
    assert "10.1.0.50/16" in t.cl.run("ip", "-br", "addr").stdout

    t.disable_direct_routing()
    assert not ping(t.cl, t.s1_ip)


# --- stale clean-up -------------------------------------------------------------------------------------------

def test_cleanup_stale_removes_only_leftovers_of_dead_harness_owners(lab: Lab) -> None:
    live = lab.host("live")  # marked, owner alive (this process)
    leftover = f"arc{secrets.token_hex(3)}-left"  # marked, owner dead: must go, with its process
    unmarked = f"arc{secrets.token_hex(3)}-nomark"  # looks like ours but has no marker: not ours
    decoy = "arcdecoy-x"  # matches the prefix only
    dead_owner = subprocess.Popen(["sleep", "300"])
    try:
        write_marker(leftover, dead_owner.pid)
        subprocess.run(["ip", "netns", "add", leftover], check=True)
        dead_owner.kill()
        dead_owner.wait()
        orphan = subprocess.Popen(["ip", "netns", "exec", leftover, "sleep", "300"], start_new_session=True)
        for ns in (unmarked, decoy):
            subprocess.run(["ip", "netns", "add", ns], check=True)

        removed = cleanup_stale("arc")

        assert leftover in removed and leftover not in namespaces()
        assert not (MARKER_DIR / f"{leftover}.owner").exists()
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert {unmarked, decoy, live.name} <= namespaces()
        assert not {unmarked, decoy, live.name} & set(removed)
    finally:
        for ns in (leftover, unmarked, decoy):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        (MARKER_DIR / f"{leftover}.owner").unlink(missing_ok=True)


# --- agents ---------------------------------------------------------------------------------------------------

STANDIN_AGENT = textwrap.dedent("""
    # Stand-in for arctic-agent: reads the same config, writes the recovery token, answers GET /livez.
    import http.server, json, os, secrets, sys, yaml
    cfg = yaml.safe_load(open(sys.argv[1]))
    os.makedirs(cfg["data_dir"], exist_ok=True)
    with open(cfg["recovery_token_file"], "w") as f:
        f.write(secrets.token_urlsafe(32))
    host, port = cfg["listen"].rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200 if self.path == "/livez" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    print("stand-in agent listening on", cfg["listen"], flush=True)
    http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
""")


def test_agent_process_lifecycle_with_a_stand_in_agent(lab: Lab) -> None:
    c = cluster(lab, 1)
    agent = lab_agent(c.agents[0], "a1", advertise="198.18.0.1", issuer_public_keys=["issuer-key"],
                      command=[sys.executable, "-c", STANDIN_AGENT, "{config}"]).wait_ready(20)
    assert agent.url == "http://198.18.0.1:8080"
    assert http(c.ctl, "GET", f"{agent.url}/livez").json() == {"status": "ok"}
    config = yaml.safe_load(agent.config_path.read_text())
    assert config["license"]["issuer_public_keys"] == ["issuer-key"]
    assert Path(config["data_dir"]).is_relative_to(lab.run_dir)
    assert "listening on 0.0.0.0:8080" in agent.log_text()
    first_token = agent.recovery_token()

    agent.restart(20)
    assert agent.recovery_token() != first_token
    assert agent.stop() == -signal.SIGTERM
    with pytest.raises(AgentFailed, match="not running"):
        agent.wait_ready(1)
    agent.start().wait_ready(20)
    assert agent.kill() == -signal.SIGKILL


def test_agent_defaults_to_the_real_arctic_agent_and_http_stays_in_the_lab(lab: Lab) -> None:
    c = cluster(lab, 1)
    agent = lab_agent(c.agents[0], "a1", advertise="198.18.0.1:9090", issuer_public_keys=[], start=False)
    assert Path(agent.argv[0]).name == "arctic-agent"
    assert agent.argv[1:] == ["run", "--config", str(agent.config_path)]
    assert agent.url == "http://198.18.0.1:9090"
    with pytest.raises(LabSafetyError):
        lab_agent(c.agents[0], "bad", advertise="192.168.1.1", issuer_public_keys=[], start=False)
    with pytest.raises(LabSafetyError):
        http(c.ctl, "GET", "http://8.8.8.8/")


def test_the_real_agent_starts_in_a_lab_host_and_answers_livez(lab: Lab) -> None:
    from harness import agent_binary

    assert subprocess.run([agent_binary(), "--help"], capture_output=True).returncode == 0
    c = cluster(lab, 1)
    agent = lab_agent(c.agents[0], "a1", advertise="198.18.0.1", issuer_public_keys=[]).wait_ready(30)
    assert http(c.ctl, "GET", f"{agent.url}/livez").status_code == 200
    assert agent.recovery_token()
