"""``make demo``: a two-agent Arctic cluster in network namespaces really carrying a TCP connection.

The story, told with the real ``arctic`` CLI (run inside the lab's ``ctl`` host, its config in the lab run dir):

  client cl 10.0.0.2 --> agent-a 198.18.0.1 ==tunnel==> agent-b 198.18.0.2 --> server s1 192.168.100.2

1. build the lab and start both agents; 2. ``arctic bootstrap`` each with one licence issuer; 3. ``arctic peers
add``; 4. ``arctic services create --target-peer``; 5. ``arctic routes add --dest-cidr 192.168.100.0/24``; 6. a
real connection from the client, and what the server saw; 7. ``nft list ruleset | grep arctic`` on agent-a and
the agent's own dry-run view (``GET /v1/plan``); 8. ``arctic services delete --yes``; 9. the connection is no
longer routed; 10. nothing is left behind. Exits non-zero as soon as a step fails; the lab is always torn down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from agentkit import Issuer  # noqa: E402
from arctic.procinfo import process_start_time  # noqa: E402
from harness import Host, Lab, http, lab_agent, transit  # noqa: E402

PORT = 9000
BIN = Path(sys.executable).parent


class DemoFailed(Exception):
    pass


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, title: str) -> None:
    say(f"\n== {n}. {title}")


def ok(text: str) -> None:
    say(f"   OK  {text}")


def check(condition: bool, text: str) -> None:
    if not condition:
        raise DemoFailed(text)
    ok(text)


def indent(text: str, limit: int = 14) -> str:
    lines = text.rstrip().splitlines()
    shown = lines[:limit] + ([f"... ({len(lines) - limit} more lines)"] if len(lines) > limit else [])
    return "\n".join(f"   | {line}" for line in shown)


def wait_until(fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = fn()
        if result:
            return result
        time.sleep(0.25)
    return fn()


def whoami_server(host: Host, ip: str) -> socket.socket:
    """A tiny server on s1 that answers each connection with the address it saw the client come from."""
    sock = host.call(lambda: socket.create_server((ip, PORT), backlog=64))

    def loop() -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(json.dumps({"server": ip, "saw_client_as": peer[0]}).encode() + b"\n")

    threading.Thread(target=loop, daemon=True).start()
    return sock


def connect(client: Host, ip: str) -> dict | str:
    def attempt() -> dict | str:
        try:
            with socket.create_connection((ip, PORT), timeout=3) as s:
                return json.loads(s.makefile().readline())
        except (OSError, ValueError) as err:
            return f"{type(err).__name__}: {err}"
    return client.call(attempt)


class Cli:
    """The real ``arctic`` command inside the ctl namespace, with its config file in the lab run dir."""

    def __init__(self, ctl: Host, config: Path) -> None:
        self.ctl, self.config = ctl, config

    def __call__(self, *args: str, show: bool = True) -> str:
        argv = ["env", f"ARCTIC_CONFIG={self.config}", f"PATH={BIN}:{os.environ.get('PATH', '')}",
                str(BIN / "arctic"), *args]
        proc = self.ctl.run(*argv, check=False, timeout=60)
        if show:
            say(f"   $ arctic {' '.join(args)}")
            say(indent(proc.stdout + proc.stderr))
        if proc.returncode != 0:
            raise DemoFailed(f"arctic {' '.join(args)} exited with {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout


def leftovers(host: Host, data_dir: Path) -> list[str]:
    found = []
    if "arctic" in host.run("nft", "list", "ruleset").stdout:
        found.append("nftables table inet arctic")
    if "61080" in host.run("ip", "rule").stdout:
        found.append("ip rule for table 61080")
    if "alias arctic" in host.run("ip", "-d", "link").stdout:
        found.append("service MACVLAN")
    if " 61: " in host.run("tc", "qdisc", "show").stdout:
        found.append("tc root qdisc 61:")
    if json.loads((data_dir / "dataplane.json").read_text())["services"]:
        found.append("services in the data-plane config")
    return found


def stop_dataplane(data_dir: Path) -> None:
    """Only needed if an agent died: a stopping agent stops its data plane here (keep_on_stop: false)."""
    try:
        record = json.loads((data_dir / "dataplane.pid").read_text())
    except (OSError, ValueError):
        return
    if process_start_time(record["pid"]) == record["start_time"]:
        os.kill(record["pid"], signal.SIGKILL)


def main() -> int:
    issuer = Issuer.generate()
    with Lab(prefix="ardemo") as lab:
        agents = {}
        server = None
        try:
            step(1, "lab: client -> agent-a -> agent-b -> server, in network namespaces")
            t = transit(lab)
            say(f"   client {t.client_ip} | agent-a {t.agent_a_ip} | agent-b {t.agent_b_ip} | s1 {t.s1_ip}"
                f" | ctl {t.ctl_ip}")
            for name, host, ip in (("a", t.agent_a, t.agent_a_ip), ("b", t.agent_b, t.agent_b_ip)):
                agents[name] = lab_agent(host, f"agent-{name}", advertise=ip, issuer_public_keys=[issuer.public_b64],
                                         extra_config={"sync_interval": 1.0, "log_format": "json",
                                                       "dataplane": {"keep_on_stop": False, "drain_seconds": 2}})
            for agent in agents.values():
                agent.wait_ready(30)
            server = whoami_server(t.s1, t.s1_ip)
            ok("two agents running (arctic-agent run), a server listening on s1:9000")
            check(isinstance(connect(t.cl, t.s1_ip), str), "before Arctic: the client cannot reach s1 at all")

            step(2, "arctic bootstrap (both agents, one licence issuer)")
            licence = lab.run_dir / "license.json"
            licence.write_text(json.dumps(issuer.licence(customer_id="cust_demo")))
            cli = Cli(t.ctl, lab.run_dir / "cli" / "config.yaml")
            cli("bootstrap", "--url", agents["a"].url, "--license-file", str(licence), "--name", "agent-a")
            Cli(t.ctl, lab.run_dir / "cli-b" / "config.yaml")(
                "bootstrap", "--url", agents["b"].url, "--license-file", str(licence), "--name", "agent-b",
                show=False)
            ok("agent-b bootstrapped the same way (its CLI config kept apart)")

            step(3, "arctic peers add")
            cli("peers", "add", f"{t.agent_b_ip}:8080")
            peers = json.loads(cli("-j", "peers", "list", show=False))
            target = next(p["id"] for p in peers if not p["is_local"])
            cli("peers", "list")

            step(4, "arctic services create --target-peer")
            out = cli("services", "create", "--target-peer", target)
            service_id = out.rsplit("ID=", 1)[1].split()[0]

            step(5, "arctic routes add --dest-cidr 192.168.100.0/24")
            cli("routes", "add", "--service", service_id, "--dest-cidr", "192.168.100.0/24", "--priority", "100")

            step(6, "a real connection from the client")
            answer = wait_until(lambda: isinstance(r := connect(t.cl, t.s1_ip), dict) and r)
            check(isinstance(answer, dict), f"client {t.client_ip} -> {t.s1_ip}:{PORT} connected through Arctic")
            say(f"   server says: {json.dumps(answer)}")
            check(answer["saw_client_as"] == "192.168.100.1", "the server saw agent-b (192.168.100.1) re-originate it")
            stats_file = agents["a"].dir / "data" / "dataplane.stats.json"
            carried = wait_until(lambda: json.loads(stats_file.read_text())["services"].get(service_id), 5) or {}
            say(f"   agent-a data-plane stats for {service_id}: {carried}")

            step(7, "nft list ruleset | grep arctic  (on agent-a)")
            listing = t.agent_a.run("sh", "-c", "nft list ruleset | grep arctic").stdout
            say(indent(listing))
            check(f"arctic {service_id} route 1" in listing, "the route is a TPROXY rule named after the service")
            plan = _plan(t, agents["a"], cli)
            check(plan["in_sync"] and plan["diff"] == "", "GET /v1/plan: rendered kernel state == applied state")

            step(8, "arctic services delete --yes")
            cli("services", "delete", service_id, "--yes")

            step(9, "the connection is no longer routed")
            gone = wait_until(lambda: isinstance(r := connect(t.cl, t.s1_ip), str) and r)
            check(isinstance(gone, str), f"client -> s1 now fails: {gone}")

            step(10, "no leftovers")
            for name, host in (("a", t.agent_a), ("b", t.agent_b)):
                data_dir = agents[name].dir / "data"
                wait_until(lambda host=host, data_dir=data_dir: not leftovers(host, data_dir))
                left = leftovers(host, data_dir)
                check(not left, f"agent-{name}: no nft table, ip rule, interface, qdisc or data-plane entry left"
                      + (f" (found: {', '.join(left)})" if left else ""))
            say("\nDemo complete: Arctic carried a real TCP connection and left nothing behind.")
            return 0
        except DemoFailed as err:
            say(f"\n   FAILED: {err}")
            for name, agent in agents.items():
                say(f"\n--- agent-{name} log (tail) ---\n{agent.log_tail(15)}")
            return 1
        finally:
            if server is not None:
                server.close()
            for agent in agents.values():
                agent.stop()
                stop_dataplane(agent.dir / "data")


def _plan(t, agent, cli: Cli) -> dict:
    """``GET /v1/plan`` with the CLI's saved credential (the CLI has no plan command; Ansible check mode uses it)."""
    config = yaml.safe_load(cli.config.read_text())
    cluster = config["clusters"][config["current_cluster"]]
    token = http(t.ctl, "POST", f"{agent.url}/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": cluster["client_id"],
        "client_secret": cluster["client_secret"]}).json()["access_token"]
    plan = wait_until(lambda: (p := http(t.ctl, "GET", f"{agent.url}/v1/plan",
                                         headers={"Authorization": f"Bearer {token}"}).json())["in_sync"] and p)
    return plan or {"in_sync": False, "diff": "?"}


if __name__ == "__main__":
    sys.exit(main())
