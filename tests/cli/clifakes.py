"""In-memory stand-ins for the agent's HTTP API, shared by the CLI unit tests (no sockets)."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml

AGENT_URL = "http://agent.test:8080"
CLUSTER_ID = "clu_01KBYMHMRJ92E090P50VRKG4ZC"
LOCAL_PEER = "peer_01KBYMHC35F0N070F3XXMEZAZR"
REMOTE_PEER = "peer_01KBYMD32Z2RVDE3G5Y9M530QR"


@dataclass
class Call:
    method: str
    path: str
    params: dict | None
    json: Any
    data: Any
    headers: dict


class FakeResponse:
    def __init__(self, status: int, body: Any):
        self.status_code = status
        self._body = body
        self.reason = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found"}.get(status, "")
        self.content = b"" if body is None else jsonlib.dumps(body).encode()
        self.text = self.content.decode()

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no body")
        return self._body


Handler = Callable[[Call], tuple[int, Any]]


@dataclass
class FakeAgent:
    """Answers (method, path) from registered handlers and records every request it saw."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # base URLs that refuse connections
    token_fetches: int = 0

    def on(self, method: str, path: str, body: Any = None, status: int = 200) -> None:
        self.routes[(method, path)] = lambda _call: (status, body)

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def request(self, method, url, timeout=None, params=None, json=None, data=None, headers=None):
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        if base in self.refuse:
            raise requests.exceptions.ConnectionError(f"HTTPConnectionPool: [Errno 111] Connection refused ({base})")
        call = Call(method, parts.path, params, json, data, dict(headers or {}))
        self.calls.append(call)
        if parts.path == "/v1/oauth/token" and ("POST", "/v1/oauth/token") not in self.routes:
            self.token_fetches += 1
            return FakeResponse(200, {"access_token": f"tok-{self.token_fetches}", "token_type": "Bearer",
                                      "expires_in": 3600})
        handler = self.routes.get((method, parts.path))
        if handler is None:
            return FakeResponse(404, {"error": f"no route {method} {parts.path}", "code": "NOT_FOUND"})
        status, body = handler(call)
        return FakeResponse(status, body)

    def api_calls(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.path != "/v1/oauth/token" and (method is None or c.method == method)]


def answers_in_turn(*answers: tuple[int, Any]) -> Handler:
    """A handler giving each (status, body) in turn, then the last one again: an agent whose view changes."""
    given = iter(answers)
    last = answers[-1]

    def handler(_call: Call) -> tuple[int, Any]:
        nonlocal last
        last = next(given, last)
        return last

    return handler


@dataclass
class FakeClock:
    """Monotonic time that moves only when the code under test sleeps: polling loops run instantly."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def write_cli_config(path: Path, *, endpoints: list[str] | None = None, **prefs: Any) -> Path:
    """A config as ``arctic bootstrap`` would leave it: one cluster, local + remote peer."""
    doc = {
        "current_cluster": CLUSTER_ID,
        "clusters": {
            CLUSTER_ID: {
                "cluster_id": CLUSTER_ID,
                "customer_id": "cust_test",
                "client_id": "cli_01KBYMHMRKGBAWSXB58ENRAR24",
                "client_secret": "sec_testsecret",
                "peers": [{"peer_id": LOCAL_PEER, "name": "agent-1", "endpoints": endpoints or [AGENT_URL]}],
                "default_peer": LOCAL_PEER,
                "name": "test",
                "description": "",
            }
        },
        "preferences": {"output_format": "table", **prefs},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return jsonlib.loads(self.out)
