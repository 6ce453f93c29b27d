"""The real ``arctic`` binary against a real ``arctic-agent`` process on 127.0.0.1.

The seed's command lines are run verbatim through ``bash -c`` (placeholders such as TARGET_PEER_ID
become shell variables), so what the user's document shows is exactly what is exercised.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ARCTIC = str(Path(sys.executable).parent / "arctic")
TIMEOUT = 60


def arctic(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ARCTIC, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          input=stdin if stdin is not None else "")


def shell(env: dict, script: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], env={**env, **variables},
                          capture_output=True, text=True, timeout=TIMEOUT)


def seed(text: str, **placeholders: str) -> str:
    """The seed's snippet with each PLACEHOLDER replaced by a quoted shell variable of the same name."""
    for name in placeholders:
        text = text.replace(name, f'"${name}"')
    return text


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def as_json(proc: subprocess.CompletedProcess) -> Any:
    return json.loads(ok(proc))


@pytest.fixture
def cli(live_agent, tmp_path: Path) -> tuple[Any, dict]:
    """(agent, env) after a real ``arctic bootstrap``; the agent also knows a second peer 'agent-b'."""
    env = live_agent.bootstrapped_cli_env(tmp_path)
    return live_agent, env


def test_bootstrap_output_and_private_config(live_agent, tmp_path: Path) -> None:
    from agentkit import cli_env

    env = cli_env(tmp_path)
    proc = arctic(env, "bootstrap", "--url", live_agent.url, "--license-file", str(live_agent.licence_file),
                  "--name", "agent-a")
    lines = ok(proc).splitlines()
    patterns = [r"Peer ID:        peer_[0-9A-Z]{26}", r"Cluster ID:     clu_[0-9A-Z]{26}",
                r"Client ID:      cli_[0-9A-Z]{26}", r"License ID:     lic_[0-9A-Z]{26}",
                r"Expires:        \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", r"Max Nodes:      10",
                r"Max Services:   100", r"", rf"Configuration saved to {re.escape(env['ARCTIC_CONFIG'])}",
                r"Set as current cluster: clu_[0-9A-Z]{26}"]
    assert len(lines) == len(patterns), proc.stdout
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    config_path = Path(env["ARCTIC_CONFIG"])
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    saved = yaml.safe_load(config_path.read_text())
    cluster = saved["clusters"][saved["current_cluster"]]
    assert cluster["peers"][0]["endpoints"] == [live_agent.url]
    assert cluster["client_secret"].startswith("sec_")

    again = arctic(env, "bootstrap", "--url", live_agent.url, "--license-file", str(live_agent.licence_file))
    assert again.returncode == 1
    assert again.stderr.splitlines()[0] == "Error: agent is already bootstrapped"


def test_read_commands_health_identity_licence_peers(cli) -> None:
    agent, env = cli
    health = as_json(arctic(env, "health", "-j"))
    assert health["status"] == "ok" and health["url"] == agent.url and health["name"] == "agent-a"
    assert ok(arctic(env, "health", "--readyz")).splitlines()[3] == "Status:      ok"
    identity = as_json(arctic(env, "cluster", "identity", "-j"))
    assert ok(arctic(env, "cluster", "identity")).splitlines()[0] == f"Peer ID:     {identity['peer_id']}"
    assert ok(arctic(env, "cluster", "sync")).splitlines() == [  # apply_kernel: false, and no other peer yet
        "agent-a: not reconciled: kernel not managed by this agent (apply_kernel: false): nothing to reconcile"]
    assert identity["peer_id"] in ok(arctic(env, "cluster", "status"))
    assert re.search(r"^State:\s+valid$", ok(arctic(env, "license", "status")), re.M)
    assert identity["license_id"] in ok(arctic(env, "license", "show"))
    remote = agent.add_remote_peer("agent-b")
    peers = ok(arctic(env, "peers", "list")).splitlines()
    assert peers[0].split() == ["ID", "NAME", "ADDRESS"] and len(peers) == 3
    assert [p["id"] for p in as_json(arctic(env, "peer", "list", "--remote", "-j"))] == [remote]
    assert re.search(r"^Is Local:\s+Yes$", ok(arctic(env, "peers", "get", identity["peer_id"])), re.M)


def test_seed_service_creation_examples(cli) -> None:
    agent, env = cli
    target = agent.add_remote_peer("agent-b")
    local = as_json(arctic(env, "cluster", "identity", "-j"))["peer_id"]
    examples = {
        "basic": ("arctic services create --target-peer TARGET_PEER_ID", {}),
        "interface": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --requires-interface",
                      {"requires_interface": True}),
        "ipv4": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --requires-interface \\\n"
                 "  --desired-ipv4 192.168.100.10/24",
                 {"requires_interface": True, "desired_ipv4_cidr": "192.168.100.10/24"}),
        "bandwidth": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --bandwidth-limit 1000",
                      {"bandwidth_limit_mbps": 1000}),
        "transparent": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --fully-transparent \\\n"
                        "  --requires-interface", {"fully_transparent": True, "requires_interface": True}),
        "kcp": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --transport kcp",
                {"transport_type": "kcp"}),
        "source": ("arctic services create \\\n  --source-peer SOURCE_PEER_ID \\\n  --target-peer TARGET_PEER_ID",
                   {"source_peer_id": local}),
        "complete": ("arctic services create \\\n  --target-peer TARGET_PEER_ID \\\n  --transport tcp \\\n"
                     "  --requires-interface \\\n  --desired-ipv4 192.168.100.10/24 \\\n  --bandwidth-limit 1000",
                     {"transport_type": "tcp", "requires_interface": True, "desired_ipv4_cidr": "192.168.100.10/24",
                      "bandwidth_limit_mbps": 1000}),
    }
    for name, (command, expected) in examples.items():
        proc = shell(env, seed(command, TARGET_PEER_ID=target, SOURCE_PEER_ID=local) + " -j --wait-timeout 0",
                     TARGET_PEER_ID=target, SOURCE_PEER_ID=local)
        svc = as_json(proc)
        wanted = {"source_peer_id": local, "target_peer_id": target, "transport_type": "tcp"} | expected
        assert {k: svc[k] for k in wanted} == wanted, name
        assert "Warning" not in proc.stderr, f"{name}: {proc.stderr}"
        if name == "ipv4":  # "complete" asks for the same address on the same peer: the seed's examples are
            ok(arctic(env, "services", "delete", svc["id"], "--yes"))  # alternatives, and one address has one holder
    table = ok(arctic(env, "services", "list")).splitlines()
    assert table[0].split() == ["ID", "SOURCE", "TARGET", "TRANSPORT", "FLAGS"]
    assert table[-1] == "FLAGS: I=interface, T=transparent, Q=qos, -=none"
    rows = [line.split() for line in table[1:-2]]
    assert len(rows) == len(examples) - 1
    assert {(r[1], r[2]) for r in rows} == {("agent-a", "agent-b")}  # peer names, not ids
    assert sorted(r[4] for r in rows) == sorted(["-", "I", "Q", "IT", "-", "-", "IQ"])

    missing = arctic(env, "services", "create", "--requires-interface")
    assert (missing.returncode, missing.stderr.splitlines()[0]) == (2, "Error: --target-peer is required")


def test_create_with_an_interface_says_what_it_still_waits_for_and_why_and_exits_0(cli) -> None:
    """agent-b is a peer record only (127.0.0.1:9): the interface never comes, and the real output says why.

    (A real target creating it, with its MAC and address, is ``tests/lab/test_service_traffic.py``.)
    """
    agent, env = cli
    target = agent.add_remote_peer("agent-b")
    create = ("services", "create", "--target-peer", target, "--requires-interface")
    proc = arctic(env, *create, "--desired-ipv4", "192.168.100.20/24", "--wait-timeout", "0")  # one read
    rows = dict(re.findall(r"^([A-Za-z ]+):\s+(.*)$", ok(proc), re.M))
    sid = rows["ID"]
    assert proc.stdout.rstrip().endswith(f"Service created successfully: ID={sid}")
    assert (rows["Interface MAC"], rows["Interface State"]) == ("-", "unknown")
    assert rows["Interface Detail"].startswith("the target peer could not be asked: ")
    err = proc.stderr.splitlines()
    assert err[0] == "Waiting up to 0 s for agent-b to create the service interface (--no-wait skips this)"
    assert err[1] == f"Still waiting for agent-b to create the service interface after 0 s: {rows['Interface Detail']}"
    assert err[2] == f"The service was created; check on it with: arctic services get {sid}"
    assert re.search(r"^Interface State:\s+unknown$", ok(arctic(env, "services", "get", sid)), re.M)

    as_script = arctic(env, *create, "--desired-ipv4", "192.168.100.21/24", "--wait-timeout", "0", "-j")
    svc = as_json(as_script)  # stdout: the service as last read, nothing else
    assert (svc["interface_state"], svc["requires_interface"]) == ("unknown", True)
    assert as_script.stderr.startswith("Still waiting for agent-b to create the service interface after 0 s: ")
    no_wait = arctic(env, *create, "--desired-ipv4", "192.168.100.22/24", "--no-wait", "-j")
    assert as_json(no_wait)["interface_state"] is None and no_wait.stderr == ""  # the POST answer, unread


def test_seed_routes_and_bandwidth_walkthrough(cli) -> None:
    agent, env = cli
    target = agent.add_remote_peer("agent-b")
    service_id = as_json(arctic(env, "services", "create", "--target-peer", target, "-j"))["id"]
    vars_ = {"SERVICE_ID": service_id}

    def run_seed(text: str, **extra: str) -> subprocess.CompletedProcess:
        return shell(env, seed(text, **vars_, **extra), **vars_, **extra)

    basic = ok(run_seed("arctic routes add --service SERVICE_ID \\\n  --source-cidr 10.0.0.0/8 \\\n"
                        "  --dest-cidr 192.168.100.0/24 \\\n  --priority 100"))
    match = re.fullmatch(r"Route IDs: (\d+)\nCount: 1\nRoute added successfully: ID=(\d+), Priority=100\n", basic)
    assert match and match[1] == match[2], basic
    first_route = match[1]
    ok(run_seed("arctic routes add --service SERVICE_ID \\\n  --dest-cidr 192.168.100.0/24 \\\n  --priority 100"))
    ok(run_seed("arctic routes add --service SERVICE_ID \\\n  --source-cidr 10.0.0.0/8 \\\n  --priority 100"))
    ok(run_seed("arctic routes add --service SERVICE_ID \\\n  --source-cidr 10.1.0.0/16 \\\n"
                "  --dest-cidr 192.168.100.0/24 \\\n  --priority 200"))
    listed = ok(run_seed("arctic routes list --service SERVICE_ID")).splitlines()
    assert listed[0].split() == ["ID", "PRIORITY", "SOURCE", "CIDR", "DEST", "CIDR", "STATE"]
    api_order = [r["id"] for r in as_json(arctic(env, "routes", "list", "--service", service_id, "-j"))]
    assert [int(line.split()[0]) for line in listed[1:]] == api_order  # the agent's precedence order, kept
    assert listed[1].split()[1:] == ["200", "10.1.0.0/16", "192.168.100.0/24", "active"]

    ok(run_seed("arctic routes update --service SERVICE_ID --route ROUTE_ID \\\n  --priority 200",
                ROUTE_ID=first_route))
    ok(run_seed("arctic routes update --service SERVICE_ID --route ROUTE_ID \\\n  --source-cidr 10.1.0.0/16 \\\n"
                "  --dest-cidr 192.168.200.0/24", ROUTE_ID=first_route))
    route = next(r for r in as_json(arctic(env, "routes", "list", "--service", service_id, "-j"))
                 if str(r["id"]) == first_route)
    assert (route["priority"], route["source_cidr"], route["dest_cidr"]) == (200, "10.1.0.0/16", "192.168.200.0/24")

    refused = run_seed("arctic routes delete --service SERVICE_ID --route ROUTE_ID", ROUTE_ID=first_route)
    assert refused.returncode == 1 and "--yes" in refused.stderr  # no terminal: refuse rather than hang
    ok(run_seed("arctic routes delete --service SERVICE_ID --route ROUTE_ID --yes", ROUTE_ID=first_route))
    assert first_route not in [str(r["id"]) for r in as_json(arctic(env, "routes", "list", "--service",
                                                                     service_id, "-j"))]

    ok(run_seed("arctic services update SERVICE_ID --bandwidth-limit 500"))
    assert as_json(arctic(env, "services", "get", service_id, "-j"))["bandwidth_limit_mbps"] == 500
    shown = ok(run_seed("arctic services get SERVICE_ID"))
    assert re.search(r"^Bandwidth Limit:\s+500 Mbps \(bandwidth_limit_mbps: 500\)$", shown, re.M)
    ok(run_seed("arctic services update SERVICE_ID --bandwidth-limit 0"))
    assert as_json(arctic(env, "services", "get", service_id, "-j"))["bandwidth_limit_mbps"] == 0

    missing = arctic(env, "routes", "add", "--priority", "100", "--dest-cidr", "192.168.100.0/24")
    assert (missing.returncode, missing.stderr.splitlines()[0]) == (2, "Error: --service is required")
    bad = arctic(env, "routes", "add", "--service", service_id, "--dest-cidr", "10.1.2.3/8", "--priority", "1")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ")
    bare = arctic(env, "routes", "add", "--service", service_id, "--dest-cidr", "10.0.0.0", "--priority", "1")
    assert bare.returncode == 1
    assert "--dest-cidr '10.0.0.0' needs slash notation: a network such as 10.0.0.0/8" in bare.stderr  # the seed's form

    ok(run_seed("arctic services delete SERVICE_ID --yes"))
    gone = arctic(env, "services", "get", service_id)
    assert gone.returncode == 1 and gone.stderr.startswith("Error: ")


def test_seed_bulk_delete_loop(cli) -> None:
    agent, env = cli
    peer_b = agent.add_remote_peer("agent-b")
    peer_c = agent.add_remote_peer("agent-c")
    doomed = {as_json(arctic(env, "services", "create", "--target-peer", peer_b, "-j"))["id"] for _ in range(3)}
    kept = as_json(arctic(env, "services", "create", "--target-peer", peer_c, "-j"))["id"]
    loop = ("for id in $(arctic services list --target-peer PEER_ID -j | jq -r '.[].id'); do\n"
            '  arctic services delete "$id" --yes\n'
            "done")
    proc = shell(env, seed(loop, PEER_ID=peer_b), PEER_ID=peer_b)
    assert ok(proc).count("Service deleted successfully") == len(doomed)
    remaining = {s["id"] for s in as_json(arctic(env, "services", "list", "-j"))}
    assert remaining == {kept} and not remaining & doomed


def test_token_for_the_seed_curl_examples(cli) -> None:
    agent, env = cli
    target = agent.add_remote_peer("agent-b")
    script = ('TOKEN=$(arctic auth token)\n'
              f'curl -sf -X POST {agent.url}/v1/services \\\n'
              '  -H "Authorization: Bearer $TOKEN" \\\n'
              '  -H "Content-Type: application/json" \\\n'
              '  -d \'{"target_peer_id": "TARGET_PEER_ID"}\'')
    svc = as_json(shell(env, script.replace("TARGET_PEER_ID", target)))
    assert svc["target_peer_id"] == target
    assert svc["id"] in {s["id"] for s in as_json(arctic(env, "services", "list", "-j"))}


def test_exit_codes_against_the_real_agent(cli, tmp_path: Path) -> None:
    agent, env = cli
    assert arctic(env, "services", "get", "svc_01KBYMNEVYN9NC4M3RB3ZGN4RZ").returncode == 1
    bad_token = arctic(env, "services", "list", "--token", "invalid_token")
    assert bad_token.returncode == 5 and bad_token.stderr.startswith("Error: ")
    no_cluster = arctic({**env, "ARCTIC_CONFIG": str(tmp_path / "none.yaml")}, "services", "list")
    assert (no_cluster.returncode, no_cluster.stderr.splitlines()[0]) == (3, "Error: no current cluster set")
    agent.stop()
    down = arctic(env, "health")
    assert (down.returncode, down.stderr.splitlines()[0]) == (4, "Error: connection refused")
    assert arctic(env, "services", "list").returncode == 4


def test_credentials_lifecycle_and_recovery_token(cli, tmp_path: Path) -> None:
    agent, env = cli
    created = ok(arctic(env, "credentials", "create", "--scopes", "peers.read,services.read"))
    client_id = re.search(r"^Client ID:\s+(\S+)$", created, re.M)[1]
    assert "WARNING: The client secret is only shown once. Store it securely." in created
    listed = ok(arctic(env, "credentials", "list"))
    assert client_id in listed
    ok(arctic(env, "credentials", "revoke", client_id, "--yes"))
    assert client_id not in ok(arctic(env, "credentials", "list"))

    ok(arctic(env, "credentials", "rotate", "--update-config"))
    assert as_json(arctic(env, "services", "list", "-j")) == []  # the new secret from the config works

    recovery = tmp_path / "recovery.token"
    recovery.write_text(agent.recovery_token)
    bare = {k: v for k, v in env.items() if k != "ARCTIC_CONFIG"} | {"ARCTIC_CONFIG": str(tmp_path / "x.yaml")}
    via_file = arctic(bare, "--url", agent.url, "--recovery-token-file", str(recovery), "credentials", "list", "-j")
    assert as_json(via_file)["credentials"]
    via_env = arctic(bare | {"ARCTIC_RECOVERY_TOKEN": agent.recovery_token}, "--url", agent.url, "peers", "list")
    ok(via_env)
