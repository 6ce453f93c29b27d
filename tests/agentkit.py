"""Test support: licences, and real agent processes on 127.0.0.1 (root namespace loopback only).

Used by the API, CLI and restart tests. Lab (namespace) agents live in ``harness.agents``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from arctic.cluster.licence import generate_issuer_key, issue_licence
from arctic.ids import new_id

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Issuer:
    private_pem: bytes
    public_b64: str

    @classmethod
    def generate(cls) -> Issuer:
        private_pem, public_b64 = generate_issuer_key()
        return cls(private_pem, public_b64)

    def licence(self, **overrides) -> dict:
        params = {"customer_id": "cust_lab", "max_nodes": 10, "max_services": 100, "valid_days": 365}
        params.update(overrides)
        return issue_licence(self.private_pem, **params)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AgentProcess:
    """A real ``arctic-agent run`` process listening on 127.0.0.1."""

    workdir: Path
    issuer: Issuer
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    extra_config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "agent.yaml"
        self.recovery_file = self.workdir / "recovery.token"
        self.log_file = self.workdir / "agent.log"
        self.licence_file = self.workdir / "license.json"
        self.licence_file.write_text(json.dumps(self.issuer.licence(), indent=2))
        config = {
            "data_dir": str(self.data_dir), "listen": f"127.0.0.1:{self.port}",
            "recovery_token_file": str(self.recovery_file), "log_format": "json",
            "license": {"issuer_public_keys": [self.issuer.public_b64]}, "apply_kernel": False,
        } | self.extra_config
        self.config_file.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> AgentProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("API_PORT", "LOG_FORMAT")}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "arctic-agent"), "run", "--config", str(self.config_file)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if requests.get(self.url + "/livez", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"agent not live after {timeout}s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def recovery_token(self) -> str:
        return self.recovery_file.read_text().strip()

    # -- convenience for tests -----------------------------------------------------------------
    def bootstrap(self, name: str = "agent-a") -> dict:
        resp = requests.post(self.url + "/v1/bootstrap",
                             json={"license": json.loads(self.licence_file.read_text()), "name": name}, timeout=10)
        resp.raise_for_status()
        self.credentials = resp.json()
        return self.credentials

    def token(self, client_id: str | None = None, client_secret: str | None = None) -> str:
        resp = requests.post(self.url + "/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": client_id or self.credentials["client_id"],
            "client_secret": client_secret or self.credentials["client_secret"]}, timeout=10)
        resp.raise_for_status()
        return resp.json()["access_token"]

    def add_remote_peer(self, name: str, address: str = "127.0.0.1:9") -> str:
        """Insert a second peer record directly (stands in for a joined peer until clustering lands)."""
        return insert_peer_record(self.data_dir / "arctic.db", name, address)

    def bootstrapped_cli_env(self, tmp_path: Path, name: str = "agent-a") -> dict:
        """Env for the real ``arctic`` CLI, after a real ``arctic bootstrap`` against this agent."""
        env = cli_env(tmp_path)
        proc = subprocess.run([str(BIN / "arctic"), "bootstrap", "--url", self.url, "--license-file",
                               str(self.licence_file), "--name", name], env=env, capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"arctic bootstrap failed ({proc.returncode}): {proc.stderr}")
        return env


def cli_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCTIC_")}
    env["ARCTIC_CONFIG"] = str(tmp_path / "cli" / "config.yaml")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def insert_peer_record(db_path: Path, name: str, address: str) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    peer_id = new_id("peer")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with sqlite3.connect(db_path, timeout=10) as conn:
        conn.execute("INSERT INTO peers (id, name, public_key, address, is_local, state, created_at, updated_at)"
                     " VALUES (?, ?, ?, ?, 0, 'active', ?, ?)",
                     (peer_id, name, base64.b64encode(public).decode(), address, now, now))
    return peer_id


class NoShaping:
    """A ``QosManager`` stand-in for reconcile-worker tests: shapes nothing, and reads back what it was given."""

    def apply(self, by_dev) -> dict:
        return {}

    def priorities(self) -> dict:
        return {}

    def installed_text(self, links) -> str:
        from arctic.netconf.qos import qos_text

        return qos_text(links)


def insert_inbound_interface_service(runtime, service_id: str, source_peer_id: str, **fields) -> str:
    """A service from ``source_peer_id`` to this agent (its target) that asks for an interface, written straight
    into the store (as replication would): the reconcile worker's tests need one this agent did not create."""
    from arctic.store import repository as repo  # the store is only needed by the tests that call this

    with runtime.db.write() as tx:
        repo.insert_service(tx, service_id, {"source_peer_id": source_peer_id, "target_peer_id": runtime.local_peer_id,
                                             "transport_type": "tcp", "requires_interface": True,
                                             "fully_transparent": False, "bandwidth_limit_mbps": 0, **fields},
                            "2026-11-24T00:00:00Z")
    return service_id
