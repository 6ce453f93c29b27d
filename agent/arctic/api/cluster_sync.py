"""``POST /v1/cluster/sync``: replicate now, then every member peer reconciles and says what it changed.

Why across the cluster: operators run ``arctic cluster sync`` against whichever agent their CLI talks to, most often
to repair state on *another* peer (the seed: a service MACVLAN deleted or left over on the target peer). Poking only
the agent that was asked left the others to their next periodic drift check. So the agent that receives the
operator's request:

1. runs a replication round and waits for it (bounded), so every peer holds the latest state before it reconciles;
2. runs its own reconcile and, in parallel, sends the same request to every other member peer with the caller's own
   bearer token (valid on every peer), marked with ``FORWARD_HEADER``: a marked request syncs only the peer that
   receives it (its own round, then its reconcile) and never fans out again;
3. answers with one entry per peer: reached or not, whether a reconcile ran for this request, and that run's report
   (actions, errors, seconds).

Each reconcile is a run the request waits for (``ReconcileWorker.run_once``, bounded by ``RECONCILE_WAIT_SECONDS``),
not a debounced poke: only then can the answer say what the run changed, and a poke could start a run of its own
that repairs the drift before the awaited one and leaves it nothing to report. A recovery-token caller has no bearer
token to forward (the recovery token authorises one agent only), so it syncs only the agent it talks to and the
answer says so.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import requests
from flask import g, request

from arctic.api.endpoint import agent
from arctic.api.forwarding import FORWARD_HEADER
from arctic.cluster import transport
from arctic.logs import get_logger
from arctic.store import repository as repo
from arctic.store.records import Peer

log = get_logger("cluster")
REASON = "cluster sync"
REPLICATION_WAIT_SECONDS = 5.0  # the replication round each agent runs first
RECONCILE_WAIT_SECONDS = 10.0  # the reconcile run the request waits for, on each peer
CONNECT_TIMEOUT_SECONDS = 3.0
PEER_WAIT_SECONDS = REPLICATION_WAIT_SECONDS + RECONCILE_WAIT_SECONDS + 2.0  # a forwarded sync does both, in turn
RECOVERY_NOTE = ("the recovery token authorises this agent only: the other peers were not asked; sync the cluster "
                 "with a bearer token")
NO_KERNEL_NOTE = "kernel not managed by this agent (apply_kernel: false): nothing to reconcile"


def sync_cluster() -> dict[str, Any]:
    """The answer to ``POST /v1/cluster/sync`` (inside the request: reads the caller's headers)."""
    runtime = agent()
    scope, note = _scope()
    replicated = _replicate(runtime)  # before asking the others: they reconcile what this agent knows
    remotes = _other_members(runtime) if scope == "cluster" else []
    headers = _forward_headers(runtime) if remotes else {}
    peers = _gather(runtime, replicated, remotes, headers)
    failed = [p["name"] or p["peer_id"] for p in peers if failed_entry(p)]
    log.info("cluster sync", scope=scope, peers=len(peers), failed=failed,
             forwarded_by=request.headers.get(FORWARD_HEADER))
    return {"triggered": True, "scope": scope, "note": note, "peers": peers}


def failed_entry(entry: dict[str, Any]) -> bool:
    """A peer not reached, or whose sync or reconcile reported an error (the CLI's partial failure)."""
    return not entry.get("reachable") or bool(entry.get("error")) or bool(entry.get("errors"))


def _scope() -> tuple[str, str | None]:
    """``cluster`` (fan out) or ``local``, and why local when the caller should know."""
    forwarded_by = request.headers.get(FORWARD_HEADER)
    if forwarded_by:
        return "local", f"asked by peer {forwarded_by}, which merges every peer's answer"
    principal = getattr(g, "principal", None)
    if (principal is not None and principal.via == "recovery") or not request.headers.get("Authorization"):
        return "local", RECOVERY_NOTE
    return "cluster", None


def _replicate(runtime) -> bool:
    """One replication round now, waited for (bounded); False without a gossiper or when it did not end in time."""
    if runtime.gossiper is None:
        return False
    return bool(runtime.gossiper.request_round(wait=REPLICATION_WAIT_SECONDS))


def _other_members(runtime) -> list[Peer]:
    """Every other peer still in the cluster, reachable or not by gossip's last account: a sync is a repair, so a
    peer that came back since is asked too (the connect timeout bounds what a dead one costs)."""
    return [p for p in repo.list_peers(runtime.db.read(), is_local=False) if p.is_member]


def _forward_headers(runtime) -> dict[str, str]:
    return {FORWARD_HEADER: runtime.local_peer_id, "Authorization": request.headers["Authorization"],
            "Content-Type": "application/json"}


def _gather(runtime, replicated: bool, remotes: list[Peer], headers: dict[str, str]) -> list[dict[str, Any]]:
    """This agent's reconcile and the other peers' syncs, all at once; one entry per peer, this one first."""
    worker = runtime.reconcile_worker
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=1 + len(remotes), thread_name_prefix="cluster-sync")
    try:
        local = pool.submit(worker.run_once, REASON) if worker is not None else None
        asked = [(peer, pool.submit(_ask, peer, headers)) for peer in remotes]
        entries = [_local_entry(runtime, replicated, local, started + RECONCILE_WAIT_SECONDS)]
        entries += [_remote_entry(peer, future, started + PEER_WAIT_SECONDS + 1.0) for peer, future in asked]
    finally:
        pool.shutdown(wait=False)  # a run past its bound finishes in the background; the answer does not wait
    return entries


def _entry(peer_id: str | None, peer: Peer | None, *, is_local: bool) -> dict[str, Any]:
    """An entry before anything is known: not reached, nothing reconciled."""
    return {"peer_id": peer_id, "name": peer.name if peer else None, "address": peer.address if peer else None,
            "is_local": is_local, "reachable": False, "reconciled": False, "replicated": False, "actions": [],
            "errors": [], "seconds": None, "error": None, "note": None}


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _local_entry(runtime, replicated: bool, run: Future | None, deadline: float) -> dict[str, Any]:
    """This agent's entry: the report of the run made for this request."""
    entry = _entry(runtime.local_peer_id, repo.local_peer(runtime.db.read()), is_local=True)
    entry.update(reachable=True, replicated=replicated)
    if run is None:
        entry["note"] = NO_KERNEL_NOTE
        return entry
    try:
        report = run.result(timeout=_left(deadline))
    except TimeoutError:
        entry["error"] = f"reconcile run still going after {RECONCILE_WAIT_SECONDS:g}s (it ends in the background)"
        return entry
    except Exception as err:  # noqa: BLE001 - the run raised: report it, the worker survives
        entry["error"] = f"reconcile run failed: {type(err).__name__}: {err}"
        return entry
    if report is None:
        entry["note"] = "not bootstrapped: nothing to reconcile"
        return entry
    entry.update(reconciled=True, actions=list(report.actions), errors=list(report.errors),
                 seconds=round(report.seconds, 3))
    return entry


def _ask(peer: Peer, headers: dict[str, str]) -> requests.Response:
    return transport.raw(peer.address, "POST", "/v1/cluster/sync", headers=headers, data=b"{}",
                         timeout=(CONNECT_TIMEOUT_SECONDS, PEER_WAIT_SECONDS))


def _remote_entry(peer: Peer, asked: Future, deadline: float) -> dict[str, Any]:
    """Another peer's entry: its own answer about itself, or why it could not be asked."""
    entry = _entry(peer.id, peer, is_local=False)
    try:
        resp = asked.result(timeout=_left(deadline))
    except (TimeoutError, requests.exceptions.ReadTimeout):
        entry.update(reachable=True, error=f"no answer within {PEER_WAIT_SECONDS:g}s")
        return entry
    except Exception as err:  # noqa: BLE001 - whatever stopped the call, the peer was not asked
        entry["error"] = _unreachable(peer, err)
        return entry
    entry["reachable"] = True
    body = _json(resp)
    if resp.status_code != 200:
        entry["error"] = f"answered {resp.status_code}: {body.get('error') or resp.reason or 'no detail'}"
        return entry
    own = next((p for p in body.get("peers") or [] if isinstance(p, dict) and p.get("peer_id") == peer.id), None)
    if own is None:
        entry["error"] = "answered without a reconcile report (an agent older than this one?)"
        return entry
    entry.update(_run_fields(own))
    return entry


def _unreachable(peer: Peer, err: Exception) -> str:
    """The transport's words for why a peer could not be asked (``connection refused``, ``connection timeout``...)."""
    text = str(err).lower()
    if isinstance(err, requests.exceptions.ConnectTimeout) or "timed out" in text:
        return f"connection timeout: {peer.address}"
    if isinstance(err, requests.exceptions.ConnectionError):
        return f"{'connection refused' if 'refused' in text else 'unreachable'}: {peer.address}"
    return f"unreachable: {peer.address} ({type(err).__name__})"


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _run_fields(own: dict[str, Any]) -> dict[str, Any]:
    """What a peer said about its own sync, with the types this answer promises."""
    seconds = own.get("seconds")
    return {"reconciled": bool(own.get("reconciled")), "replicated": bool(own.get("replicated")),
            "actions": _texts(own.get("actions")), "errors": _texts(own.get("errors")),
            "seconds": seconds if isinstance(seconds, int | float) else None,
            "error": str(own["error"]) if own.get("error") else None,
            "note": str(own["note"]) if own.get("note") else None}


def _texts(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []
