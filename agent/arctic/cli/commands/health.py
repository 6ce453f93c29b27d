"""``arctic health``: is this agent alive (``/livez``) or ready (``/readyz``)? No credentials needed."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.context import CliState, common_options, pass_state
from arctic.cli.errors import ApiCallError, CliError
from arctic.cli.output import format_timestamp, render_kv

VALUE_COLUMN = 13  # as documented: "Peer ID:     peer_..."


def _peer_identity(state: CliState) -> tuple[str, str]:
    """(peer id, name) of the agent answering; names come from the CLI config (the API has none public)."""
    client = state.client()
    try:
        ident = client.get("/v1/cluster/identity", auth=False)
    except ApiCallError:
        return "", ""
    peer_id = str((ident or {}).get("peer_id") or "") if isinstance(ident, dict) else ""
    name = ""
    cluster = state.current_cluster()
    if cluster and peer_id:
        name = next((p.name for p in cluster.peers if p.peer_id == peer_id), "")
    return peer_id, name


@click.command("health")
@click.option("--readyz", is_flag=True, help="Check readiness (/readyz) instead of liveness (/livez).")
@common_options
@pass_state
def command(state: CliState, readyz: bool) -> None:
    """Check an agent's health. Exit 0 when healthy, 4 when unreachable, 1 when it reports unhealthy."""
    client = state.client()
    path = "/readyz" if readyz else "/livez"
    unhealthy: ApiCallError | None = None
    try:
        body: Any = client.get(path, auth=False)
    except ApiCallError as exc:  # 503 carries the same body shape with a non-ok status
        unhealthy = exc
        body = {"status": "unavailable", "error": exc.message}
    body = body if isinstance(body, dict) else {"status": str(body)}
    peer_id, name = _peer_identity(state)
    report: dict[str, Any] = {
        "peer_id": peer_id,
        "name": name,
        "url": client.base_url,
        "status": body.get("status", "unknown"),
        "timestamp": body.get("timestamp"),
    }
    if "checks" in body:
        report["checks"] = body["checks"]

    def table(r: dict[str, Any]) -> str:
        rows: list[tuple[str, Any]] = [
            ("Peer ID", r["peer_id"]),
            ("Name", r["name"]),
            ("URL", r["url"]),
            ("Status", r["status"]),
            ("Timestamp", format_timestamp(r["timestamp"])),
        ]
        text = render_kv(rows, width=VALUE_COLUMN)
        checks = r.get("checks")
        pairs: list[tuple[str, Any]] = []
        if isinstance(checks, dict):
            pairs = [(str(k), v.get("status", v) if isinstance(v, dict) else v) for k, v in checks.items()]
        elif isinstance(checks, list):
            pairs = [(str(i.get("name", "?")), i.get("status")) for i in checks if isinstance(i, dict)]
        if pairs:  # after the documented block, so that block keeps its exact layout
            text += "\n\nChecks:\n" + "\n".join("  " + line for line in render_kv(pairs).splitlines())
        return text

    state.output().emit(report, table)
    if unhealthy is not None or str(report["status"]).lower() not in ("ok", "ready", "healthy"):
        raise CliError(f"agent at {client.base_url} is not {'ready' if readyz else 'healthy'}: {report['status']}")
