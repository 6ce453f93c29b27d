"""Shared by the ``test_cluster_*`` lab modules and ``bench/convergence``: real agents in lab namespaces.

It holds no tests. Every request to an agent is made from the controller namespace ``ctl`` (``harness.http``,
or a subprocess started there with ``ip netns exec``), never from the root namespace. Agents run with
``apply_kernel: false`` (control plane only) and a short ``sync_interval``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from agentkit import Issuer
from harness import AgentProcess, Lab, cluster, http, lab_address, lab_agent

BIN = Path(sys.executable).parent
ARCTIC = str(BIN / "arctic")

# Fires a list of requests at the same moment (a barrier) from inside the namespace it runs in; JSON in and out.
_CONCURRENT = r"""
import json, sys, threading
import requests
reqs = json.load(sys.stdin)
barrier = threading.Barrier(len(reqs))
out = [None] * len(reqs)
def go(i, r):
    s = requests.Session(); s.trust_env = False
    barrier.wait()
    t0 = __import__("time").monotonic()
    try:
        resp = s.request(r["method"], r["url"], json=r.get("json"), headers=r.get("headers"), timeout=30)
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        out[i] = {"status": resp.status_code, "body": body, "seconds": __import__("time").monotonic() - t0}
    except Exception as err:
        out[i] = {"status": None, "body": repr(err)}
threads = [threading.Thread(target=go, args=(i, r)) for i, r in enumerate(reqs)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(out, sys.stdout)
"""


@dataclass
class Member:
    """One lab agent and what its bootstrap returned."""

    name: str
    ip: str
    proc: AgentProcess
    creds: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def address(self) -> str:
        return f"{self.ip}:8080"

    @property
    def peer_id(self) -> str:
        return self.creds["peer_id"]

    def log_entries(self) -> list[dict]:
        out = []
        for line in self.proc.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def warnings(self, msg: str) -> list[dict]:
        return [e for e in self.log_entries() if e.get("level") == "warning" and e.get("msg") == msg]


class ClusterLab:
    """``n`` agents ``a1..an`` on one segment, each bootstrapped with its own licence (same customer by default)."""

    def __init__(self, lab: Lab, n: int, issuer: Issuer, *, sync_interval: float = 0.5,
                 licences: dict[int, dict] | None = None, bootstrap: bool = True) -> None:
        self.lab, self.issuer = lab, issuer
        self.topo = cluster(lab, n)
        self.ctl = self.topo.ctl
        self.members: list[Member] = []
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        for i, host in enumerate(self.topo.agents, start=1):
            ip = self.topo.address(host)
            proc = lab_agent(host, f"ag{i}", advertise=ip, issuer_public_keys=[issuer.public_b64],
                             extra_config={"sync_interval": sync_interval, "apply_kernel": False})
            self.members.append(Member(f"agent-{i}", ip, proc))
        for m in self.members:
            m.proc.wait_ready(30)
        if bootstrap:
            for i, m in enumerate(self.members, start=1):
                self.bootstrap(m, **(licences or {}).get(i, {}))

    def __getitem__(self, index: int) -> Member:
        return self.members[index]

    # -- HTTP from ctl ---------------------------------------------------------------------------------------
    def bootstrap(self, m: Member, **licence: Any) -> dict:
        resp = http(self.ctl, "POST", m.url + "/v1/bootstrap", json={"license": self.issuer.licence(**licence),
                                                                      "name": m.name})
        assert resp.status_code == 201, resp.text
        m.creds = resp.json()
        return m.creds

    def token(self, m: Member, creds: dict | None = None) -> str:
        """A token from ``m`` for ``creds`` (default: ``m``'s own bootstrap credential)."""
        creds = creds or m.creds
        cached = self._tokens.get((m.name, creds["client_id"]))
        if cached and cached[1] > time.monotonic():
            return cached[0]
        resp = http(self.ctl, "POST", m.url + "/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": creds["client_id"],
            "client_secret": creds["client_secret"]})
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]
        self._tokens[(m.name, creds["client_id"])] = (token, time.monotonic() + 1800)
        return token

    def headers(self, m: Member, token_from: Member | None = None) -> dict:
        return {"Authorization": "Bearer " + self.token(token_from or m)}

    def api(self, m: Member, method: str, path: str, *, token_from: Member | None = None,
            **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", self.headers(m, token_from))
        return http(self.ctl, method, m.url + path, **kwargs)

    def ok(self, m: Member, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        resp = self.api(m, method, path, **kwargs)
        assert resp.status_code == expect, f"{method} {path} on {m.name}: {resp.status_code} {resp.text}"
        return resp.json()

    def status(self, m: Member) -> dict:
        return self.ok(m, "GET", "/v1/cluster/status")

    def join(self, m: Member, other: Member, **body: Any) -> requests.Response:
        return self.api(m, "POST", "/v1/peers", json={"address": other.address, **body})

    def concurrently(self, requests_: list[dict]) -> list[dict]:
        """Send ``[{method, url, json?, headers?}]`` all at once from a process in ``ctl``; returns the answers."""
        for r in requests_:
            lab_address(urlsplit(r["url"]).hostname or "")
        proc = subprocess.run(self.ctl.command(sys.executable, "-c", _CONCURRENT), input=json.dumps(requests_),
                              capture_output=True, text=True, timeout=90, check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    # -- CLI in ctl ------------------------------------------------------------------------------------------
    def cli(self, m: Member, *args: str, token_from: Member | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real ``arctic`` binary, run inside ``ctl`` against ``m`` (``--url`` and ``--token``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCTIC_")}
        env["ARCTIC_CONFIG"] = str(self.lab.run_dir / "cli" / "config.yaml")
        argv = [ARCTIC, *args, "--url", m.url, "--token", self.token(token_from or m)]
        proc = subprocess.run(self.ctl.command(*argv), env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        if check:
            assert proc.returncode == 0, f"arctic {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    # -- waiting -----------------------------------------------------------------------------------------------
    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def hashes(self, members: list[Member] | None = None) -> dict[str, str]:
        return {m.name: self.status(m)["registry_hash"] for m in (members or self.members)}

    def wait_converged(self, members: list[Member] | None = None, *, peers: int | None = None,
                       timeout: float = 20.0) -> str:
        """Until every member reports the same registry hash (and ``peers`` peers); returns the hash."""
        members = members or self.members

        def converged() -> str | None:
            statuses = [self.status(m) for m in members]
            hashes = {s["registry_hash"] for s in statuses}
            if len(hashes) != 1:
                return None
            if peers is not None and any(s["totals"]["peers"] != peers for s in statuses):
                return None
            return hashes.pop()

        return self.wait_for(f"equal registry hashes on {[m.name for m in members]}", converged, timeout)

    def form_cluster(self, members: list[Member] | None = None) -> None:
        """Chain joins (1->2, 2->3, ...) and wait until every member knows every other one (transitive)."""
        members = members or self.members
        for left, right in zip(members, members[1:], strict=False):
            resp = self.join(left, right)
            assert resp.status_code == 201, resp.text
        self.wait_converged(members, peers=len(members))


def service_body(source: Member, target: Member, **extra: Any) -> dict:
    return {"source_peer_id": source.peer_id, "target_peer_id": target.peer_id, **extra}
