"""Two real Arctic agents carrying services across ``harness.transit``: the set-up benchmarks and tests share.

    from harness import Lab, transit
    from harness.arcticlab import ArcticPair
    with Lab(prefix="arcb") as lab:
        t = transit(lab)
        with ArcticPair.start(t, encryption="none") as pair:
            sid = pair.create_service()
            pair.add_routes(sid, {"dest_cidr": "192.168.100.0/24", "priority": 100})

agent-a (198.18.0.1, the client's gateway) and agent-b (198.18.0.2, the servers' gateway) are real
``arctic-agent run`` processes with kernel changes and their data planes on. Both are bootstrapped with one
licence issuer and joined, and every change goes through the REST API from the ``ctl`` host, as an operator
would make it, so the root namespace never sends to a lab address. ``set_encryption`` restarts both agents with
another ``tunnel.encryption`` (the tunnel mode is agent configuration, and both ends must agree).

Data planes are started with ``keep_on_stop: false`` so stopping an agent stops its data plane; ``stop`` also
ends a data plane that outlived its agent, by the pid in its pidfile checked against the process start time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from arctic.procinfo import process_start_time

from .agents import AgentProcess, http, lab_agent
from .topologies import Transit

ENCRYPTIONS = ("tls", "none")
TOKEN_LIFETIME = 600.0  # seconds we reuse an access token (the agent issues them for an hour)


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (returned); TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def route_s2_directly(t: Transit) -> None:
    """Kernel routes between the client LAN and s2's LAN only: the ``direct`` baseline of the benchmarks.

    Unlike ``Transit.enable_direct_routing`` this leaves 192.168.100.0/24 (s1) unrouted, so a connection to s1
    succeeds only when Arctic carries it, and a benchmark can never measure plain routing by mistake.
    """
    t.agent_a.route("192.168.200.0/24", via=t.agent_b_ip)
    t.agent_b.route("10.0.0.0/8", via=t.agent_a_ip)


def _licence_issuer() -> Any:
    from agentkit import Issuer  # tests/ is on sys.path wherever the harness is imported

    return Issuer.generate()


@dataclass
class ArcticPair:
    """agent-a and agent-b of a transit lab, bootstrapped, joined and reachable through their API."""

    t: Transit
    agents: dict[str, AgentProcess]
    encryption: str
    creds: dict[str, dict] = field(default_factory=dict)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def start(cls, t: Transit, *, encryption: str = "tls", extra_config: dict | None = None,
              per_agent: dict[str, dict] | None = None, ready_timeout: float = 30.0,
              commands: dict[str, Sequence[str]] | None = None) -> ArcticPair:
        """Start both agents, bootstrap them with one licence issuer and join agent-b to agent-a.

        ``extra_config`` is merged into both agents' configuration, ``per_agent["a"|"b"]`` into one agent's;
        ``commands["a"|"b"]`` replaces that agent's command line (``lab_agent``'s ``command``).
        """
        if encryption not in ENCRYPTIONS:
            raise ValueError(f"encryption {encryption!r} must be one of {', '.join(ENCRYPTIONS)}")
        issuer = _licence_issuer()
        config = {"sync_interval": 1.0, "reconcile_interval": 30, "log_level": "warning",
                  "tunnel": {"encryption": encryption},
                  "dataplane": {"keep_on_stop": False, "drain_seconds": 1}}
        for key, value in (extra_config or {}).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
        agents = {name: lab_agent(host, f"agent-{name}", advertise=ip, issuer_public_keys=[issuer.public_b64],
                                  extra_config={**config, **(per_agent or {}).get(name, {})},
                                  command=(commands or {}).get(name))
                  for name, host, ip in (("a", t.agent_a, t.agent_a_ip), ("b", t.agent_b, t.agent_b_ip))}
        pair = cls(t, agents, encryption)
        try:
            for agent in agents.values():
                agent.wait_ready(ready_timeout)
            for name, agent in agents.items():
                resp = http(t.ctl, "POST", f"{agent.url}/v1/bootstrap",
                            json={"license": issuer.licence(), "name": f"agent-{name}"})
                if resp.status_code != 201:
                    raise RuntimeError(f"bootstrap of agent-{name}: {resp.status_code} {resp.text}")
                pair.creds[name] = resp.json()
            pair.api("POST", "/v1/peers", json={"address": f"{t.agent_b_ip}:8080"}, expect=201)
            wait_until(lambda: len(pair.api("GET", "/v1/peers", on="b")) == 2, what="agent-b to know agent-a")
        except BaseException:
            pair.stop()
            raise
        return pair

    def __enter__(self) -> ArcticPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- API, from the ctl host --------------------------------------------------------------------------------

    def peer_id(self, name: str) -> str:
        return self.creds[name]["peer_id"]

    def token(self, name: str) -> str:
        cached = self._tokens.get(name)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        resp = http(self.t.ctl, "POST", f"{self.agents[name].url}/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": self.creds[name]["client_id"],
            "client_secret": self.creds[name]["client_secret"]})
        if resp.status_code != 200:
            raise RuntimeError(f"token from agent-{name}: {resp.status_code} {resp.text}")
        self._tokens[name] = (resp.json()["access_token"], time.monotonic() + TOKEN_LIFETIME)
        return self._tokens[name][0]

    def api(self, method: str, path: str, *, on: str = "a", expect: int | None = 200, timeout: float = 60,
            **kw: Any) -> Any:
        """One API call to agent-``on`` from ctl; RuntimeError if the status is not ``expect`` (None: any)."""
        resp = http(self.t.ctl, method, f"{self.agents[on].url}{path}", timeout=timeout,
                    headers={"Authorization": f"Bearer {self.token(on)}"}, **kw)
        if expect is not None and resp.status_code != expect:
            raise RuntimeError(f"{method} {path} on agent-{on}: {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None

    def create_service(self, *, on: str = "a", **body: Any) -> str:
        """A service to agent-b (target) created through agent-``on``; ``body`` adds or overrides fields."""
        body.setdefault("target_peer_id", self.peer_id("b"))
        return self.api("POST", "/v1/services", on=on, json=body, expect=201)["id"]

    def add_routes(self, sid: str, *routes: dict, on: str = "a") -> list[int]:
        """One batch ``POST /v1/services/{sid}/routes`` (all or nothing) through agent-``on``; the new route ids."""
        return self.api("POST", f"/v1/services/{sid}/routes", on=on, json={"routes": list(routes)},
                        expect=201)["route_ids"]

    def delete_services(self) -> None:
        for svc in self.api("GET", "/v1/services"):
            self.api("DELETE", f"/v1/services/{svc['id']}")

    # --- kernel and data plane ----------------------------------------------------------------------------------

    def nft_table(self, name: str = "a") -> str:
        """``nft list table inet arctic`` on agent-``name`` ("" while the table does not exist)."""
        host = self.t.agent_a if name == "a" else self.t.agent_b
        return host.run("nft", "list", "table", "inet", "arctic", check=False, timeout=60).stdout

    def dataplane_config(self, name: str) -> dict:
        try:
            return json.loads((self.agents[name].dir / "data" / "dataplane.json").read_text())
        except (OSError, ValueError):
            return {}

    def stats(self, name: str) -> dict:
        """agent-``name``'s data-plane stats file (rewritten every second; {} while there is none)."""
        try:
            return json.loads((self.agents[name].dir / "data" / "dataplane.stats.json").read_text())
        except (OSError, ValueError):
            return {}

    def fresh_stats(self, name: str, timeout: float = 10.0) -> dict:
        """The stats once every worker of agent-``name`` has reported after this call: each reports every second,
        so a file read at once may still miss what a worker did in its last second."""
        since = time.time()

        def fresh() -> dict | None:
            stats = self.stats(name)
            reports = [w.get("reported_at") or 0 for w in stats.get("workers", [])]
            return stats if reports and min(reports) > since else None

        return wait_until(fresh, timeout=timeout, what=f"agent-{name}'s workers to report")

    def carried_by(self, sid: str, name: str = "a") -> int:
        """Connections the data plane of agent-``name`` has relayed for service ``sid`` since it started."""
        side = "source" if name == "a" else "target"
        return int(self.fresh_stats(name).get("services", {}).get(sid, {}).get(side, 0))

    def dataplane_ready(self, name: str) -> bool:
        resp = http(self.t.ctl, "GET", f"{self.agents[name].url}/readyz")
        return resp.status_code == 200 and resp.json().get("checks", {}).get("dataplane") == "ok"

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def set_encryption(self, encryption: str, timeout: float = 30.0) -> None:
        """Restart both agents with ``tunnel.encryption: encryption`` (services and routes are kept)."""
        if encryption not in ENCRYPTIONS:
            raise ValueError(f"encryption {encryption!r} must be one of {', '.join(ENCRYPTIONS)}")
        if encryption == self.encryption:
            return
        self.set_tunnel(timeout=timeout, encryption=encryption)
        self.encryption = encryption

    def set_tunnel(self, *, timeout: float = 30.0, **settings: Any) -> None:
        """Restart both agents with these ``tunnel`` settings merged in (services and routes are kept)."""
        for agent in self.agents.values():
            agent.stop()
            stop_dataplane(agent)
            agent.config["tunnel"] = {**agent.config.get("tunnel", {}), **settings}
            agent.config_path.write_text(json.dumps(agent.config))  # JSON is YAML
            agent.start()
        for name, agent in self.agents.items():
            agent.wait_ready(timeout)
            wait_until(lambda name=name: self.dataplane_ready(name), timeout=timeout,
                       what=f"agent-{name}'s data plane with tunnel settings {settings}")

    def stop(self) -> None:
        """Stop both agents and their data planes (idempotent)."""
        for agent in self.agents.values():
            try:
                agent.stop()
            finally:
                stop_dataplane(agent)


def stop_dataplane(agent: AgentProcess) -> None:
    """End a data plane that outlived its agent: by the pidfile's pid, only if its start time still matches."""
    try:
        record = json.loads((agent.dir / "data" / "dataplane.pid").read_text())
        pid, started = int(record["pid"]), record["start_time"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process_start_time(pid) != started:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 3
        while process_start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(0.05)
