"""``arctic bootstrap``: initialise a fresh agent with a licence and remember the new cluster."""

from __future__ import annotations

from pathlib import Path

import click

from arctic.cli.client import ApiClient, normalise_url
from arctic.cli.commands._shared import read_licence_file
from arctic.cli.config import ClusterEntry, PeerEntry, display_path
from arctic.cli.context import CliState, common_options, pass_state
from arctic.cli.errors import ApiCallError, CliError, UsageProblem
from arctic.cli.output import format_timestamp, render_kv

# The product's own wording for the two refusals operators meet most (reference notes §3.2).
FRIENDLY = {"ALREADY_BOOTSTRAPPED": "agent is already bootstrapped", "LICENSE_EXPIRED": "license has expired"}
VALUE_COLUMN = 16  # as documented: "Peer ID:        peer_..."


@click.command("bootstrap")
@click.option("--license-file", type=click.Path(dir_okay=False, path_type=Path), help="Signed licence JSON.")
@click.option("--name", default=None, help="Name for this peer (e.g. agent-a).")
@click.option("--description", default=None, help="Free-text description of this peer.")
@common_options
@pass_state
def command(state: CliState, license_file: Path | None, name: str | None, description: str | None) -> None:
    """Bootstrap an agent: upload the licence, create its identity and the cluster credential.

    The returned credential is saved in the CLI config and the cluster becomes the current one.
    """
    if not state.url:
        raise UsageProblem("--url is required for bootstrap")
    if license_file is None:
        raise UsageProblem("--license-file is required")
    licence = read_licence_file(license_file)
    url = normalise_url(state.url)
    body: dict = {"license": licence}
    if name is not None:
        body["name"] = name
    if description is not None:
        body["description"] = description

    client = ApiClient([url], timeout=float(state.config().preference("timeout") or 30))
    try:
        result = client.post("/v1/bootstrap", json=body, auth=False)
    except ApiCallError as exc:
        if exc.code in FRIENDLY:
            raise CliError(FRIENDLY[exc.code], hint=exc.message) from exc
        raise
    if not isinstance(result, dict) or not result.get("cluster_id") or not result.get("client_secret"):
        raise CliError("agent returned an unexpected bootstrap response (no cluster_id/client_secret)")

    cfg = state.config()
    cluster_id = str(result["cluster_id"])
    peer_id = str(result.get("peer_id") or "")
    entry = cfg.clusters.get(cluster_id) or ClusterEntry(cluster_id=cluster_id)
    entry.customer_id = str(licence.get("customer_id") or entry.customer_id)
    entry.client_id = str(result.get("client_id") or "")
    entry.client_secret = str(result["client_secret"])
    if peer_id:
        entry.upsert_peer(PeerEntry(peer_id=peer_id, name=name or "", endpoints=[url]))
        entry.default_peer = entry.default_peer or peer_id
    if name and not entry.name:
        entry.name = name
    if description and not entry.description:
        entry.description = description
    cfg.clusters[cluster_id] = entry
    cfg.current_cluster = cluster_id
    cfg.save()

    out = state.output()
    out.emit(
        result,
        lambda r: render_kv(
            [
                ("Peer ID", r.get("peer_id")),
                ("Cluster ID", r.get("cluster_id")),
                ("Client ID", r.get("client_id")),
                ("License ID", r.get("license_id")),
                ("Expires", format_timestamp(r.get("expires_at"))),
                ("Max Nodes", r.get("max_nodes")),
                ("Max Services", r.get("max_services")),
            ],
            width=VALUE_COLUMN,
        ),
    )
    if not out.machine:
        click.echo()
    out.human(f"Configuration saved to {display_path(cfg.path)}")
    out.human(f"Set as current cluster: {cluster_id}")
