"""``arctic peers`` (alias ``peer``): list, get, add, update, delete, remove-self."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.context import CliState, common_options, confirm_destructive, pass_state, yes_option
from arctic.cli.output import format_timestamp, render_kv, render_table, yes_no


@click.group("peers")
def command() -> None:
    """Peers (agents) of the current cluster."""


def _peer_rows(p: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [
        ("ID", p.get("id")),
        ("Name", p.get("name")),
        ("Public Key", p.get("public_key")),
        ("Is Local", yes_no(p.get("is_local"))),
        ("Address", p.get("address")),
    ]
    if p.get("state") not in (None, "", "active"):
        rows.append(("State", p.get("state")))
    return [*rows, ("Created At", format_timestamp(p.get("created_at")))]


def _peer_table(rows: list[dict[str, Any]]) -> str:
    """ID, NAME, ADDRESS as documented; a STATE column (unreachable, deactivated, revoked) joins them as soon as
    one peer is not plainly active, so a healthy cluster prints exactly the documented table."""
    with_state = any(isinstance(p, dict) and p.get("state") not in (None, "", "active") for p in rows)
    headers = ["ID", "NAME", "ADDRESS"] + (["STATE"] if with_state else [])
    return render_table(headers, [[p.get("id"), p.get("name"), p.get("address")]
                                  + ([p.get("state") or "-"] if with_state else []) for p in rows])


@command.command("list")
@click.option("--local", "only", flag_value="local", help="Only the peer answering this request.")
@click.option("--remote", "only", flag_value="remote", help="Only the other peers.")
@common_options
@pass_state
def list_peers(state: CliState, only: str | None) -> None:
    """List peers: ID, NAME, ADDRESS (and STATE when a peer is not active)."""
    params = {"is_local": "true" if only == "local" else "false"} if only else None
    peers = state.client().get("/v1/peers", params=params)
    state.output().emit(peers, _peer_table)


@command.command("get")
@click.argument("peer_id")
@common_options
@pass_state
def get_peer(state: CliState, peer_id: str) -> None:
    """Show one peer."""
    peer = state.client().get(f"/v1/peers/{peer_id}")
    state.output().emit(peer, lambda p: render_kv(_peer_rows(p)))


@command.command("add")
@click.argument("address")
@click.option("--name", default=None, help="Alias for the new peer.")
@common_options
@pass_state
def add_peer(state: CliState, address: str, name: str | None) -> None:
    """Add a bootstrapped agent at ADDRESS (host:port) to the cluster (runs the handshake)."""
    body: dict[str, Any] = {"address": address}
    if name:
        body["name"] = name
    peer = state.client().post("/v1/peers", json=body)
    out = state.output()
    out.emit(peer, lambda p: render_kv(_peer_rows(p)))
    out.human(f"Peer added successfully: ID={peer.get('id') if isinstance(peer, dict) else '?'}")


@command.command("update")
@click.argument("peer_id")
@click.option("--name", default=None, help="New name.")
@common_options
@pass_state
def update_peer(state: CliState, peer_id: str, name: str | None) -> None:
    """Change a peer's metadata (its name)."""
    if name is None:
        raise click.UsageError("nothing to update: give --name")
    peer = state.client().put(f"/v1/peers/{peer_id}", json={"name": name})
    state.output().emit(peer, lambda p: render_kv(_peer_rows(p)))


@command.command("delete")
@click.argument("peer_id")
@yes_option
@common_options
@pass_state
def delete_peer(state: CliState, peer_id: str, yes: bool) -> None:
    """Remove a remote peer from the cluster (not the local one; see remove-self)."""
    confirm_destructive(f"Delete peer {peer_id}?", yes=yes)
    body = state.client().delete(f"/v1/peers/{peer_id}")
    out = state.output()
    out.emit(body if body is not None else {"deleted": True, "id": peer_id}, lambda _b: "")
    out.human(f"Peer deleted successfully: ID={peer_id}")


@command.command("remove-self")
@yes_option
@common_options
@pass_state
def remove_self(state: CliState, yes: bool) -> None:
    """Leave the cluster gracefully (signed deactivation announcement to the other peers)."""
    confirm_destructive("Remove this peer from the cluster?", yes=yes)
    body = state.client().delete("/v1/peers/self")
    out = state.output()
    out.emit(body if body is not None else {"removed": True}, lambda _b: "")
    out.human("Peer removed from the cluster")
