"""Runs INSIDE the controller namespace (``ip netns exec <ctl> python probe.py``): writes, then times convergence.

Reads a plan on stdin (agent URLs, bearer headers, number of cycles) and writes JSON results on stdout. Every
URL in the plan is a lab address chosen by ``run.py``. Each cycle makes four writes about one service, on
different agents (two of them forwarded to the service's owner):

  create (at the owner) -> add a route (elsewhere) -> update (at the owner) -> delete (elsewhere)

For each write: the time from sending it until every agent reports the same, new registry hash
(``GET /v1/cluster/status`` on all agents in parallel, every ``poll`` seconds).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def main() -> None:
    plan = json.load(sys.stdin)
    agents, timeout, poll = plan["agents"], plan["timeout"], plan["poll"]
    sessions = [requests.Session() for _ in agents]
    for s in sessions:
        s.trust_env = False
    pool = ThreadPoolExecutor(max_workers=len(agents))

    def status(i: int) -> dict:
        return sessions[i].get(agents[i]["url"] + "/v1/cluster/status", headers=agents[i]["auth"], timeout=5).json()

    def hashes() -> list[str]:
        return [s["registry_hash"] for s in pool.map(status, range(len(agents)))]

    def steady(deadline: float) -> str:
        while time.monotonic() < deadline:
            found = set(hashes())
            if len(found) == 1:
                return found.pop()
            time.sleep(poll)
        raise SystemExit("cluster did not settle before a write")

    def write(i: int, op: str, method: str, path: str, body: dict | None = None) -> dict:
        before = steady(time.monotonic() + timeout)
        t0 = time.monotonic()
        resp = sessions[i].request(method, agents[i]["url"] + path, json=body, headers=agents[i]["auth"], timeout=30)
        acked = time.monotonic() - t0
        if resp.status_code >= 300:
            raise SystemExit(f"{method} {path} on agent {i + 1}: {resp.status_code} {resp.text}")
        while time.monotonic() - t0 < timeout:
            found = set(hashes())
            if len(found) == 1 and before not in found:
                return {"op": op, "agent": i + 1, "ack_s": acked, "converged_s": time.monotonic() - t0,
                        "body": resp.json()}
            time.sleep(poll)
        return {"op": op, "agent": i + 1, "ack_s": acked, "converged_s": None, "body": {}}

    n = len(agents)
    results = []
    for k in range(plan["cycles"]):
        owner, target, other, last = k % n, (k + 1) % n, (k + 3) % n, (k + 5) % n
        made = write(owner, "create", "POST", "/v1/services", {"source_peer_id": agents[owner]["peer_id"],
                                                     "target_peer_id": agents[target]["peer_id"]})
        sid = made["body"]["id"]
        results.append(made)
        results.append(write(other, "route add (forwarded)", "POST", f"/v1/services/{sid}/routes",
                             {"routes": [{"priority": 100, "dest_cidr": f"192.168.{100 + k % 100}.0/24"}]}))
        results.append(write(owner, "update", "PUT", f"/v1/services/{sid}", {"bandwidth_limit_mbps": 10 + k}))
        results.append(write(last, "delete (forwarded)", "DELETE", f"/v1/services/{sid}"))
    for r in results:
        r.pop("body", None)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
