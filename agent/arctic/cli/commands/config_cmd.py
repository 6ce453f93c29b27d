"""``arctic config view|use-cluster|delete-peer``: the CLI's own config file (no API calls)."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.context import CliState, common_options, pass_state
from arctic.cli.errors import CliError, ConfigError
from arctic.cli.output import dump


@click.group("config")
def command() -> None:
    """View and edit the CLI config file."""


def _mask(secret: str) -> str:
    return (secret[:4] + "****") if secret else ""


@command.command("view")
@click.option("--show-secrets", is_flag=True, help="Print client secrets instead of masking them.")
@common_options
@pass_state
def view(state: CliState, show_secrets: bool) -> None:
    """Print the effective config (YAML; -j for JSON). Secrets are masked unless --show-secrets."""
    cfg = state.config()
    data: dict[str, Any] = cfg.to_dict()
    if not show_secrets:
        for cluster in data["clusters"].values():
            cluster["client_secret"] = _mask(cluster.get("client_secret", ""))
    out = state.output()
    click.echo(dump(data, "json" if out.format == "json" else "yaml"))
    out.message(f"# {cfg.path}")


@command.command("use-cluster")
@click.argument("cluster_id")
@pass_state
def use_cluster(state: CliState, cluster_id: str) -> None:
    """Make CLUSTER_ID (or a cluster's name) the current cluster."""
    cfg = state.config()
    match = cfg.clusters.get(cluster_id) or next(
        (c for c in cfg.clusters.values() if c.name and c.name == cluster_id), None
    )
    if match is None:
        raise ConfigError(f"cluster {cluster_id} is not in {cfg.path}")
    cfg.current_cluster = match.cluster_id
    cfg.save()
    click.echo(f"Set as current cluster: {match.cluster_id}")


@command.command("delete-peer")
@click.argument("peer")
@pass_state
def delete_peer(state: CliState, peer: str) -> None:
    """Forget PEER (id or name) in the current cluster's config; the cluster itself is unchanged."""
    cfg = state.config()
    cluster = cfg.require_current()
    kept = [p for p in cluster.peers if peer not in (p.peer_id, p.name)]
    if len(kept) == len(cluster.peers):
        raise CliError(f"peer {peer} is not in the config of cluster {cluster.cluster_id}")
    removed = {p.peer_id for p in cluster.peers} - {p.peer_id for p in kept}
    cluster.peers = kept
    if cluster.default_peer in removed:
        cluster.default_peer = kept[0].peer_id if kept else ""
    cfg.save()
    click.echo(f"Peer removed from config: {', '.join(sorted(removed))}")
