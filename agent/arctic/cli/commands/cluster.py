"""``arctic cluster identity|sync|status``."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.context import CliState, common_options, pass_state
from arctic.cli.errors import PartialFailure
from arctic.cli.output import format_timestamp, render_kv, render_table, text_or, yes_no


@click.group("cluster")
def command() -> None:
    """Cluster identity, forced synchronisation and gossip status."""


@command.command("identity")
@common_options
@pass_state
def identity(state: CliState) -> None:
    """Show the answering agent's peer id, public key, licence and cluster (no auth needed)."""
    body = state.client().get("/v1/cluster/identity", auth=False)

    def table(r: dict[str, Any]) -> str:
        version = str(r.get("version") or "")
        if version and not version.startswith("v"):
            version = "v" + version
        return render_kv(
            [
                ("Peer ID", r.get("peer_id")),
                ("Public Key", r.get("public_key")),
                ("License ID", r.get("license_id")),
                ("Cluster ID", r.get("cluster_id")),
                ("Version", version),
            ]
        )

    state.output().emit(body, table)


@command.command("sync")
@common_options
@pass_state
def sync(state: CliState) -> None:
    """Replicate now, then reconcile every member peer and show what each changed.

    Every reachable peer applies the latest state at once (a leftover or missing service interface on the target
    peer included), one line per peer. Exit code 6 when a peer could not be asked or reported an error.
    """
    body = state.client().post("/v1/cluster/sync", json={})
    out = state.output()
    if not isinstance(body, dict) or not isinstance(body.get("peers"), list):  # an agent without per-peer reports
        out.emit(body if body is not None else {"triggered": True}, lambda _body: "Cluster sync triggered")
        return
    out.emit(body, _render_sync)
    failed = [p for p in body["peers"] if isinstance(p, dict) and _sync_failed(p)]
    if failed:
        raise PartialFailure(f"cluster sync incomplete on {len(failed)} of {len(body['peers'])} peers: "
                             + ", ".join(_peer_name(p) for p in failed))


def _peer_name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("peer_id") or "?")


def _sync_failed(entry: dict[str, Any]) -> bool:
    """Not reached, or the peer's sync or reconcile reported an error (the agent's own rule, restated)."""
    return not entry.get("reachable") or bool(entry.get("error")) or bool(entry.get("errors"))


def _sync_line(entry: dict[str, Any]) -> str:
    """``agent-b: reconciled, changed: ip link add ...`` / ``agent-c: not reached (connection refused: ...)``."""
    name = _peer_name(entry)
    if not entry.get("reachable"):
        return f"{name}: not reached ({entry.get('error') or 'no detail'})"
    if not entry.get("reconciled"):
        return f"{name}: not reconciled: {entry.get('error') or entry.get('note') or 'no detail'}"
    actions = [str(a) for a in entry.get("actions") or []]
    line = f"{name}: reconciled, " + (f"changed: {'; '.join(actions)}" if actions else "no change")
    errors = [str(e) for e in entry.get("errors") or []]
    return line + (f"; errors: {'; '.join(errors)}" if errors else "")


def _render_sync(body: dict[str, Any]) -> str:
    lines = [_sync_line(p) for p in body["peers"] if isinstance(p, dict)]
    if body.get("note"):
        lines.append(f"Note: {body['note']}")
    return "\n".join(lines)


HASH_SHOWN = 16  # enough to compare by eye; -j gives the full hash


def _short(value: Any) -> str:
    return str(value)[:HASH_SHOWN] if value else "-"


def _reachable(value: Any) -> str:
    return "-" if value is None else yes_no(value)


def _session_columns(session: Any) -> list[str]:
    """Data-plane sessions with a peer: "up(4/4)" (sessions up / sessions), RTT, open streams, reconnects."""
    if not isinstance(session, dict):
        return ["-", "-", "-", "-"]
    rtt = session.get("rtt_ms")
    return [f"{session.get('state', '-')}({session.get('sessions_up', 0)}/{session.get('sessions', 0)})",
            "-" if rtt is None else f"{rtt:.2f}ms", str(session.get("streams", 0)),
            str(session.get("reconnects", 0))]


def _render_status(body: Any) -> str:
    """Local registry summary, then one row per peer; IN SYNC compares each peer's hash with ours."""
    if not isinstance(body, dict):
        return text_or(body)
    local_hash = body.get("registry_hash")
    totals = body.get("totals") if isinstance(body.get("totals"), dict) else {}
    rows: list[tuple[str, Any]] = [
        ("Peer ID", body.get("peer_id")),
        ("Cluster ID", body.get("cluster_id")),
        ("Registry Hash", local_hash),
    ]
    if body.get("coordinator"):
        rows.append(("Coordinator", body.get("coordinator")))
    rows += [(str(k).replace("_", " ").title(), v) for k, v in totals.items()]
    peers = [p for p in body.get("peers") or [] if isinstance(p, dict)]
    table = render_table(
        ["PEER ID", "NAME", "ADDRESS", "LOCAL", "REACHABLE", "LAST SEEN", "REGISTRY HASH", "IN SYNC", "SESSIONS",
         "RTT", "STREAMS", "RECONNECTS"],
        [
            [
                p.get("peer_id"),
                p.get("name"),
                p.get("address"),
                yes_no(p.get("is_local")),
                _reachable(p.get("reachable")),
                format_timestamp(p.get("last_seen")),
                _short(p.get("registry_hash")),
                "-" if not p.get("registry_hash") else yes_no(p.get("registry_hash") == local_hash),
                *_session_columns(p.get("session")),
            ]
            for p in peers
        ],
    )
    return render_kv(rows) + "\n\n" + table


@command.command("status")
@common_options
@pass_state
def status(state: CliState) -> None:
    """Gossip and data-plane diagnostics per peer: last seen, reachability, registry hash, and the data plane's
    sessions with it (state, sessions up, RTT, open streams, reconnects).

    Different hashes on different peers mean state has not converged yet.
    """
    body = state.client().get("/v1/cluster/status")
    state.output().emit(body, _render_status)
