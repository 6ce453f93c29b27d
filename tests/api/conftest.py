"""In-process API fixtures: the real Flask app, a real SQLite file, real tokens; no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentkit import Issuer, insert_peer_record
from arctic.api.app import create_app
from arctic.config import parse_config
from arctic.runtime import Agent


class Clock:
    """A controllable clock for licence-state and token-expiry tests."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw) -> None:
        self.now += timedelta(**kw)


@dataclass
class Api:
    runtime: Agent
    client: object
    issuer: Issuer
    clock: Clock
    data_dir: Path
    creds: dict = field(default_factory=dict)
    _token: str | None = None

    def bootstrap(self, **licence_overrides) -> dict:
        resp = self.client.post("/v1/bootstrap", json={"license": self.issuer.licence(**licence_overrides),
                                                       "name": "agent-a"})
        assert resp.status_code == 201, resp.get_json()
        self.creds = resp.get_json()
        self._token = self.token_for(self.creds["client_id"], self.creds["client_secret"])
        return self.creds

    def token_for(self, client_id: str, secret: str) -> str:
        resp = self.client.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                                         "client_id": client_id, "client_secret": secret})
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["access_token"]

    def headers(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self._token}"}

    def call(self, method: str, path: str, token: str | None = None, **kw):
        return self.client.open(path, method=method, headers=self.headers(token), **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, **kw):
        return self.call("POST", path, **kw)

    def put(self, path, **kw):
        return self.call("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def add_peer(self, name: str = "agent-b") -> str:
        return insert_peer_record(self.data_dir / "arctic.db", name, "127.0.0.1:9")

    @property
    def local_peer_id(self) -> str:
        return self.creds["peer_id"]

    def create_service(self, **body) -> dict:
        body.setdefault("target_peer_id", self.add_peer(f"peer-{len(body)}-{id(body) % 9999}"))
        resp = self.post("/v1/services", json=body)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()


def make_api(tmp_path: Path, issuer: Issuer, clock: Clock | None = None) -> Api:
    clock = clock or Clock()
    data_dir = tmp_path / "data"
    config = parse_config({"data_dir": str(data_dir), "listen": "127.0.0.1:8080",
                           "recovery_token_file": str(tmp_path / "recovery.token"),
                           "license": {"issuer_public_keys": [issuer.public_b64]}, "apply_kernel": False}, env={})
    runtime = Agent(config, clock=clock)
    runtime.recovery_token = "test-recovery-token-value"
    app = create_app(runtime)
    app.testing = True
    return Api(runtime, app.test_client(), issuer, clock, data_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fresh_api(tmp_path, issuer, clock) -> Api:
    return make_api(tmp_path, issuer, clock)


@pytest.fixture
def api(fresh_api) -> Api:
    fresh_api.bootstrap()
    return fresh_api


@pytest.fixture
def peer_b(api) -> str:
    return api.add_peer("agent-b")
