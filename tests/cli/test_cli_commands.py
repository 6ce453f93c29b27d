"""bootstrap, health, cluster, license, peers, credentials, auth, config: output and exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from clifakes import AGENT_URL, CLUSTER_ID, LOCAL_PEER, REMOTE_PEER, FakeAgent

BOOTSTRAP_RESPONSE = {
    "peer_id": LOCAL_PEER, "peer_public_key": "qnGy=", "client_id": "cli_01KBYMHMRKGBAWSXB58ENRAR24",
    "client_secret": "sec_new", "license_id": "lic_01KB45EYP1VJ1RZEGJDPKJQ9V4", "cluster_id": CLUSTER_ID,
    "expires_at": "2025-12-31T23:59:59Z", "max_nodes": 10, "max_services": 100,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("ARCTIC_URL", "ARCTIC_TOKEN", "ARCTIC_RECOVERY_TOKEN", "ARCTIC_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "arctic" / "config.yaml"


@pytest.fixture
def licence_file(tmp_path: Path) -> Path:
    path = tmp_path / "license.json"
    path.write_text(json.dumps({"customer_id": "cust_xyz", "license_id": "lic_1", "signature": "x"}))
    return path


# -- bootstrap ------------------------------------------------------------------------------------

def test_bootstrap_prints_the_documented_block_and_saves_a_private_config(
    fake_agent: FakeAgent, run_cli, clean_env: Path, licence_file: Path
) -> None:
    fake_agent.on("POST", "/v1/bootstrap", BOOTSTRAP_RESPONSE, status=201)
    res = run_cli("bootstrap", "--url", AGENT_URL, "--license-file", str(licence_file), "--name", "agent-1")
    assert res.code == 0, res.err
    assert res.out.splitlines() == [
        f"Peer ID:        {LOCAL_PEER}",
        f"Cluster ID:     {CLUSTER_ID}",
        "Client ID:      cli_01KBYMHMRKGBAWSXB58ENRAR24",
        "License ID:     lic_01KB45EYP1VJ1RZEGJDPKJQ9V4",
        "Expires:        2025-12-31 23:59:59 UTC",
        "Max Nodes:      10",
        "Max Services:   100",
        "",
        f"Configuration saved to {clean_env}",
        f"Set as current cluster: {CLUSTER_ID}",
    ]
    call = fake_agent.api_calls("POST")[0]
    assert call.json == {"license": json.loads(licence_file.read_text()), "name": "agent-1"}
    assert "Authorization" not in call.headers
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o600
    saved = yaml.safe_load(clean_env.read_text())
    assert saved["current_cluster"] == CLUSTER_ID
    cluster = saved["clusters"][CLUSTER_ID]
    assert (cluster["client_id"], cluster["client_secret"], cluster["customer_id"]) == (
        "cli_01KBYMHMRKGBAWSXB58ENRAR24", "sec_new", "cust_xyz")
    assert cluster["peers"] == [{"peer_id": LOCAL_PEER, "name": "agent-1", "endpoints": [AGENT_URL]}]


def test_bootstrap_shows_home_paths_with_a_tilde(
    fake_agent: FakeAgent, run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, licence_file: Path
) -> None:
    for var in ("ARCTIC_CONFIG", "XDG_CONFIG_HOME", "ARCTIC_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fake_agent.on("POST", "/v1/bootstrap", BOOTSTRAP_RESPONSE, status=201)
    res = run_cli("bootstrap", "--url", AGENT_URL, "--license-file", str(licence_file))
    assert "Configuration saved to ~/.config/arctic/config.yaml" in res.out.splitlines()


@pytest.mark.parametrize("args,message", [
    (["--license-file", "x.json"], "Error: --url is required for bootstrap"),
    (["--url", AGENT_URL], "Error: --license-file is required"),
])
def test_bootstrap_requires_url_and_licence(fake_agent: FakeAgent, run_cli, clean_env, args, message) -> None:
    res = run_cli("bootstrap", *args)
    assert (res.code, res.err.splitlines()[0]) == (2, message)
    assert fake_agent.calls == []


def test_bootstrap_unreadable_licence_file(fake_agent: FakeAgent, run_cli, clean_env, tmp_path: Path) -> None:
    res = run_cli("bootstrap", "--url", AGENT_URL, "--license-file", str(tmp_path / "missing.json"))
    assert res.code == 1 and res.err.startswith("Error: failed to read license file")
    assert fake_agent.calls == [] and not clean_env.exists()


def test_bootstrap_twice_says_already_bootstrapped_and_keeps_the_config(
    fake_agent: FakeAgent, run_cli, clean_env, licence_file: Path
) -> None:
    fake_agent.on("POST", "/v1/bootstrap", {"error": "already", "code": "ALREADY_BOOTSTRAPPED"}, status=409)
    res = run_cli("bootstrap", "--url", AGENT_URL, "--license-file", str(licence_file))
    assert (res.code, res.err.splitlines()[0]) == (1, "Error: agent is already bootstrapped")
    assert not clean_env.exists()


# -- health ---------------------------------------------------------------------------------------

def test_health_prints_the_documented_block(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/livez", {"status": "ok", "timestamp": "2025-12-09T04:43:41Z"})
    fake_agent.on("GET", "/v1/cluster/identity", {"peer_id": LOCAL_PEER})
    res = run_cli("health")
    assert res.code == 0, res.err
    assert res.out.splitlines() == [
        f"Peer ID:     {LOCAL_PEER}", "Name:        agent-1", f"URL:         {AGENT_URL}",
        "Status:      ok", "Timestamp:   2025-12-09 04:43:41 UTC",
    ]
    assert all("Authorization" not in c.headers for c in fake_agent.calls)


def test_health_json(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/livez", {"status": "ok", "timestamp": "2025-12-09T04:43:41Z"})
    fake_agent.on("GET", "/v1/cluster/identity", {"peer_id": LOCAL_PEER})
    assert run_cli("health", "-j").json() == {"peer_id": LOCAL_PEER, "name": "agent-1", "url": AGENT_URL,
                                              "status": "ok", "timestamp": "2025-12-09T04:43:41Z"}


def test_health_unreachable_exits_4(fake_agent: FakeAgent, run_cli, clean_env) -> None:
    fake_agent.refuse.add("http://127.0.0.1:9")
    res = run_cli("health", "--url", "http://127.0.0.1:9")
    assert (res.code, res.err.splitlines()[0]) == (4, "Error: connection refused")


def test_not_ready_exits_1_and_shows_the_checks(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/readyz", {"status": "unavailable", "timestamp": "2025-12-09T04:43:41Z",
                                     "checks": {"store": "ok", "license": "error: suspended"}}, status=503)
    res = run_cli("health", "--readyz")
    assert res.code == 1
    assert "Error: agent at" in res.err


# -- cluster --------------------------------------------------------------------------------------

def test_cluster_identity_is_public_and_formatted_as_documented(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/cluster/identity", {
        "peer_id": LOCAL_PEER, "public_key": "qnGyPtol7lqzLYU3989eaC+K4xda0w9KXlcEOM9cSBQ=",
        "license_id": "lic_01KB45EYP1VJ1RZEGJDPKJQ9V4", "cluster_id": CLUSTER_ID, "version": "0.1.0"})
    res = run_cli("cluster", "identity")
    assert res.out.splitlines() == [
        f"Peer ID:     {LOCAL_PEER}",
        "Public Key:  qnGyPtol7lqzLYU3989eaC+K4xda0w9KXlcEOM9cSBQ=",
        "License ID:  lic_01KB45EYP1VJ1RZEGJDPKJQ9V4",
        f"Cluster ID:  {CLUSTER_ID}",
        "Version:     v0.1.0",
    ]
    assert fake_agent.token_fetches == 0


def test_cluster_sync(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("POST", "/v1/cluster/sync", {"triggered": True})
    res = run_cli("cluster", "sync")
    assert (res.code, res.out) == (0, "Cluster sync triggered\n")


def test_cluster_status_marks_peers_whose_hash_differs(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/cluster/status", {
        "peer_id": LOCAL_PEER, "cluster_id": CLUSTER_ID, "registry_hash": "a" * 64,
        "totals": {"peers": 2, "services": 1},
        "peers": [
            {"peer_id": LOCAL_PEER, "name": "agent-1", "address": "127.0.0.1:8080", "is_local": True,
             "reachable": True, "last_seen": None, "registry_hash": "a" * 64},
            {"peer_id": REMOTE_PEER, "name": "agent-2", "address": "198.18.0.2:8080", "is_local": False,
             "reachable": False, "last_seen": "2025-12-09T04:43:41Z", "registry_hash": "b" * 64,
             "session": {"state": "up", "sessions": 4, "sessions_up": 4, "rtt_ms": 0.412, "streams": 3,
                         "streams_total": 90, "reconnects": 1}},
        ]})
    res = run_cli("cluster", "status")
    assert res.code == 0, res.err
    rows = [line.split() for line in res.out.splitlines() if line.startswith("peer_")]
    assert rows[0][-5] == "Yes" and rows[1][-5] == "No"  # IN SYNC
    assert rows[0][-4:] == ["-", "-", "-", "-"]  # no data-plane session with oneself
    assert rows[1][-4:] == ["up(4/4)", "0.41ms", "3", "1"]  # SESSIONS, RTT, STREAMS, RECONNECTS
    assert "2025-12-09 04:43:41 UTC" in res.out
    assert "Services:       1" in res.out


# -- licence --------------------------------------------------------------------------------------

def test_license_update_puts_the_file_under_license(fake_agent: FakeAgent, run_cli, cli_config,
                                                    licence_file: Path) -> None:
    fake_agent.handle("PUT", "/v1/license", lambda c: (200, {"license_id": "lic_1", "state": "valid"}))
    res = run_cli("license", "update", "--license-file", str(licence_file))
    assert res.code == 0, res.err
    assert fake_agent.api_calls("PUT")[0].json == {"license": json.loads(licence_file.read_text())}


def test_license_status_shows_the_state(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/license", {"license_id": "lic_1", "state": "warning", "days_remaining": 12,
                                         "expires_at": "2026-01-01T00:00:00Z"})
    res = run_cli("license", "status")
    assert "State:           warning" in res.out and "Days Remaining:  12" in res.out


# -- peers ----------------------------------------------------------------------------------------

def test_peers_list_table_and_local_filter(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/peers", [{"id": LOCAL_PEER, "name": "agent-1", "address": "192.168.3.251:8080"}])
    res = run_cli("peer", "list", "--local")
    assert res.out.splitlines() == [
        f"{'ID'.ljust(len(LOCAL_PEER))}  NAME     ADDRESS",
        f"{LOCAL_PEER}  agent-1  192.168.3.251:8080",
    ]
    assert fake_agent.api_calls()[0].params == {"is_local": "true"}


def test_peers_get_block(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", f"/v1/peers/{LOCAL_PEER}", {
        "id": LOCAL_PEER, "name": "agent-1", "public_key": "qnGy=", "is_local": True,
        "address": "192.168.3.251:8080", "created_at": "2025-12-08T09:26:30Z"})
    assert run_cli("peers", "get", LOCAL_PEER).out.splitlines() == [
        f"ID:          {LOCAL_PEER}", "Name:        agent-1", "Public Key:  qnGy=", "Is Local:    Yes",
        "Address:     192.168.3.251:8080", "Created At:  2025-12-08 09:26:30 UTC"]


# -- credentials ----------------------------------------------------------------------------------

def test_credentials_create_with_short_scopes(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.handle("POST", "/v1/credentials", lambda c: (201, {
        "client_id": "cli_X", "client_secret": "sec_abc", "scopes": ["urn:tillered:arctic:peers.read"],
        "created_at": "2024-01-15T10:30:00Z"}))
    res = run_cli("credentials", "create", "--scopes", "peers.read,services.read")
    assert res.code == 0, res.err
    assert fake_agent.api_calls("POST")[0].json == {"scopes": ["peers.read", "services.read"]}
    assert res.out.splitlines() == [
        "Credentials created", "Client ID:      cli_X", "Client Secret:  sec_abc",
        "Scopes:         urn:tillered:arctic:peers.read", "Created:        2024-01-15 10:30:00 UTC", "",
        "WARNING: The client secret is only shown once. Store it securely."]


def test_credentials_list_reads_the_wrapped_list(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/credentials", {"credentials": [
        {"client_id": "cli_A", "scopes": ["urn:tillered:arctic:admin"], "license_id": "lic_1",
         "created_at": "2025-12-08T20:26:39+11:00", "last_used_at": None}]})
    assert run_cli("credential", "list").out.splitlines() == [
        "Client ID:    cli_A", "Scopes:       urn:tillered:arctic:admin", "License ID:   lic_1",
        "Created At:   2025-12-08 09:26:39 UTC", "Last Used At: never"]


def test_revoking_the_current_credential_is_refused_by_the_agent(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("DELETE", "/v1/credentials/cli_A",
                  {"error": "cannot revoke the credential currently in use", "code": "CANNOT_REVOKE_CURRENT"},
                  status=422)
    res = run_cli("credentials", "revoke", "cli_A", "--yes")
    assert (res.code, res.err.strip()) == (1, "Error: cannot revoke the credential currently in use")


def test_rotate_with_update_config_stores_the_new_secret(fake_agent: FakeAgent, run_cli, cli_config: Path) -> None:
    fake_agent.on("POST", "/v1/cluster/credentials/rotate", {
        "client_id": "cli_01KBYMHMRKGBAWSXB58ENRAR24", "client_secret": "sec_rotated", "version": 2,
        "rotated_by": LOCAL_PEER, "rotated_at": "2025-12-09T04:43:41Z"})
    res = run_cli("credentials", "rotate", "--update-config")
    assert res.code == 0, res.err
    assert yaml.safe_load(cli_config.read_text())["clusters"][CLUSTER_ID]["client_secret"] == "sec_rotated"
    assert stat.S_IMODE(cli_config.stat().st_mode) == 0o600


# -- auth, config, global options -----------------------------------------------------------------

def test_auth_token_prints_only_the_token(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    res = run_cli("auth", "token")
    assert (res.code, res.out, res.err) == (0, "tok-1\n", "")


def test_no_current_cluster_exits_3(fake_agent: FakeAgent, run_cli, clean_env) -> None:
    res = run_cli("services", "list")
    assert (res.code, res.err.splitlines()[0]) == (3, "Error: no current cluster set")
    assert fake_agent.calls == []


def test_url_and_token_env_work_without_a_config(fake_agent: FakeAgent, run_cli, clean_env,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCTIC_URL", "http://other.test:8080")
    monkeypatch.setenv("ARCTIC_TOKEN", "envtoken")
    fake_agent.on("GET", "/v1/peers", [])
    assert run_cli("peers", "list", "-j").json() == []
    assert fake_agent.calls[0].headers["Authorization"] == "Bearer envtoken"


def test_flags_after_the_subcommand_override_the_env(fake_agent: FakeAgent, run_cli, cli_config,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCTIC_TOKEN", "envtoken")
    fake_agent.on("GET", "/v1/peers", [])
    run_cli("peers", "list", "--token", "flagtoken")
    assert fake_agent.calls[0].headers["Authorization"] == "Bearer flagtoken"


def test_recovery_token_file_sends_the_recovery_header(fake_agent: FakeAgent, run_cli, clean_env,
                                                       tmp_path: Path) -> None:
    token_file = tmp_path / "recovery.token"
    token_file.write_text("rec-123\n")
    fake_agent.on("GET", "/v1/credentials", {"credentials": []})
    res = run_cli("--url", AGENT_URL, "--recovery-token-file", str(token_file), "credentials", "list")
    assert res.code == 0, res.err
    assert fake_agent.calls[0].headers == {"X-Arctic-Recovery": "rec-123"}


def test_recovery_token_flag_beats_env_and_file(fake_agent: FakeAgent, run_cli, clean_env, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCTIC_RECOVERY_TOKEN", "from-env")
    (tmp_path / "f").write_text("from-file")
    fake_agent.on("GET", "/v1/peers", [])
    run_cli("--url", AGENT_URL, "--recovery-token", "from-flag", "--recovery-token-file", str(tmp_path / "f"),
            "peers", "list")
    run_cli("--url", AGENT_URL, "--recovery-token-file", str(tmp_path / "f"), "peers", "list")
    assert [c.headers["X-Arctic-Recovery"] for c in fake_agent.calls] == ["from-flag", "from-env"]


def test_forbidden_exits_5(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    fake_agent.on("GET", "/v1/credentials", {"error": "insufficient scope", "code": "FORBIDDEN"}, status=403)
    assert run_cli("credentials", "list").code == 5


def test_unknown_flag_is_a_usage_error(fake_agent: FakeAgent, run_cli, cli_config) -> None:
    res = run_cli("services", "list", "--unknown-flag")
    assert (res.code, res.err.splitlines()[0]) == (2, "Error: unknown flag: --unknown-flag")


def test_output_preference_from_the_config_is_the_default(fake_agent: FakeAgent, run_cli, cli_config: Path) -> None:
    raw = yaml.safe_load(cli_config.read_text())
    raw["preferences"]["output_format"] = "json"
    cli_config.write_text(yaml.safe_dump(raw))
    fake_agent.on("GET", "/v1/peers", [])
    assert run_cli("peers", "list").json() == []
    assert run_cli("peers", "list", "-o", "table").out.strip() == "ID  NAME  ADDRESS"


def test_config_view_masks_secrets_unless_asked(run_cli, cli_config: Path) -> None:
    masked = run_cli("config", "view")
    assert masked.code == 0 and "sec_testsecret" not in masked.out and "sec_****" in masked.out
    assert "sec_testsecret" in run_cli("config", "view", "--show-secrets").out


def test_endpoint_failover_uses_the_next_configured_peer(fake_agent: FakeAgent, run_cli, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from clifakes import write_cli_config

    monkeypatch.delenv("ARCTIC_URL", raising=False)
    path = write_cli_config(tmp_path / "c.yaml", endpoints=["http://down.test:1", AGENT_URL])
    fake_agent.refuse.add("http://down.test:1")
    fake_agent.on("GET", "/v1/peers", [])
    assert run_cli("--config", str(path), "peers", "list", "-j").code == 0
