"""``arctic services`` (alias ``service``): list, get, create, update, delete."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from arctic.cli import interface_wait
from arctic.cli.client import ApiClient
from arctic.cli.commands._shared import cidr_errors_name_the_flags, name_or_id, peer_names, route_table
from arctic.cli.context import CliState, common_options, confirm_destructive, pass_state, yes_option
from arctic.cli.errors import CliError, UsageProblem
from arctic.cli.output import Output, bitrate_text, bytes_text, format_timestamp, render_kv, render_table, yes_no

LEGEND = "FLAGS: I=interface, T=transparent, Q=qos, -=none"
TRANSPORTS = click.Choice(["tcp", "kcp"], case_sensitive=False)


@click.group("services")
def command() -> None:
    """Services: one-way links from a source peer to a target peer."""


def service_flags(svc: dict[str, Any]) -> str:
    flags = ""
    if svc.get("requires_interface"):
        flags += "I"
    if svc.get("fully_transparent"):
        flags += "T"
    if svc.get("bandwidth_limit_mbps"):
        flags += "Q"
    return flags or "-"


def bandwidth_text(mbps: Any) -> str:
    """The limit, and the API field by its name: the seed tells operators to look for ``bandwidth_limit_mbps``."""
    return f"{mbps} Mbps (bandwidth_limit_mbps: {mbps})" if mbps else "unlimited (bandwidth_limit_mbps: 0)"


def service_rows(svc: dict[str, Any], names: dict[str, str]) -> list[tuple[str, Any]]:
    """The documented ``services get`` block, extended with the fields the excerpt cut off."""
    rows: list[tuple[str, Any]] = [
        ("ID", svc.get("id")),
        ("Source Peer ID", svc.get("source_peer_id")),
        ("Source Peer Name", names.get(str(svc.get("source_peer_id")), "")),
        ("Target Peer ID", svc.get("target_peer_id")),
        ("Target Peer Name", names.get(str(svc.get("target_peer_id")), "")),
        ("Transport", svc.get("transport_type")),
        ("Requires Interface", yes_no(svc.get("requires_interface"))),
    ]
    if svc.get("requires_interface"):
        if svc.get("interface_name"):
            rows.append(("Interface Name", svc.get("interface_name")))
        rows.append(("Interface MAC", svc.get("interface_mac")))
        if svc.get("desired_ipv4_cidr"):
            rows.append(("Desired IPv4", svc.get("desired_ipv4_cidr")))
        if svc.get("desired_ipv6_cidr"):
            rows.append(("Desired IPv6", svc.get("desired_ipv6_cidr")))
        rows.append(("Actual Interface IPv4", svc.get("interface_ipv4_cidr")))
        rows.append(("Actual Interface IPv6", svc.get("interface_ipv6_cidr")))
        if svc.get("interface_state"):  # where creating it stands, as the target peer reports it
            rows.append(("Interface State", svc.get("interface_state")))
        if svc.get("interface_detail"):
            rows.append(("Interface Detail", svc.get("interface_detail")))
    rows += [
        ("Fully Transparent", yes_no(svc.get("fully_transparent"))),
        ("Bandwidth Limit", bandwidth_text(svc.get("bandwidth_limit_mbps"))),
    ]
    routes = svc.get("routes")
    rows.append(("Routes", len(routes) if isinstance(routes, list) else svc.get("route_count", 0)))
    if "traffic" in svc:
        rows += traffic_rows(svc["traffic"], names)
    if svc.get("name"):
        rows.append(("Name", svc.get("name")))
    rows.append(("Created At", format_timestamp(svc.get("created_at"))))
    if svc.get("updated_at"):
        rows.append(("Updated At", format_timestamp(svc.get("updated_at"))))
    return rows


def traffic_rows(traffic: dict[str, Any] | None, names: dict[str, str]) -> list[tuple[str, Any]]:
    """The service's live counters, as its source peer's data plane counts them."""
    if not traffic:
        return [("Traffic", "unknown (the source peer's data plane could not be asked)")]
    refused = traffic.get("refused") or {}
    why = ", ".join(f"{reason}: {count}" for reason, count in refused.items())
    return [
        ("Connections", f"{traffic.get('connections_open', 0)} open, {traffic.get('connections_total', 0)} total"),
        ("Sent", f"{bytes_text(traffic.get('bytes_sent'))} (now {bitrate_text(traffic.get('throughput_sent_bps'))})"),
        ("Received", f"{bytes_text(traffic.get('bytes_received'))} "
                     f"(now {bitrate_text(traffic.get('throughput_received_bps'))})"),
        ("Refused", f"{traffic.get('refused_total', 0)}" + (f" ({why})" if why else "")),
        ("Last Connection", format_timestamp(traffic.get("last_connection_at"))),
        ("Counted By", f"{name_or_id(names, traffic.get('observed_by'))} since "
                       f"{format_timestamp(traffic.get('counting_since'))}"),
    ]


def render_service(svc: dict[str, Any], names: dict[str, str]) -> str:
    text = render_kv(service_rows(svc, names))
    routes = svc.get("routes")
    if isinstance(routes, list) and routes:
        text += "\n\n" + route_table(routes)
    return text


@command.command("list")
@click.option("--source-peer", metavar="PEER_ID", help="Only services whose source is this peer.")
@click.option("--target-peer", metavar="PEER_ID", help="Only services whose target is this peer.")
@click.option("--requires-interface", is_flag=True, default=False, help="Only services with a MACVLAN interface.")
@common_options
@pass_state
def list_services(
    state: CliState, source_peer: str | None, target_peer: str | None, requires_interface: bool
) -> None:
    """List services: ID, SOURCE, TARGET (peer names), TRANSPORT, FLAGS; -o wide adds open connections, throughput
    each way (bits/s over the last 5 s) and the last connection, as each service's source peer counts them."""
    client = state.client()
    params: dict[str, str] = {}
    if source_peer:
        params["source_peer_id"] = source_peer
    if target_peer:
        params["target_peer_id"] = target_peer
    if requires_interface:
        params["requires_interface"] = "true"
    services = client.get("/v1/services", params=params or None)
    out = state.output()
    if out.machine:
        out.emit(services)
        return
    names = peer_names(client)
    headers = ["ID", "SOURCE", "TARGET", "TRANSPORT", "FLAGS"]
    rows = [[s.get("id"), name_or_id(names, s.get("source_peer_id")), name_or_id(names, s.get("target_peer_id")),
             s.get("transport_type"), service_flags(s)] for s in services or []]
    if out.wide:
        headers += ["OPEN", "SENT/S", "RECEIVED/S", "LAST CONNECTION"]
        for row, svc in zip(rows, services or [], strict=True):
            traffic = svc.get("traffic") or {}
            row += [traffic.get("connections_open", "-"),
                    bitrate_text(traffic["throughput_sent_bps"]) if traffic else "-",
                    bitrate_text(traffic["throughput_received_bps"]) if traffic else "-",
                    format_timestamp(traffic.get("last_connection_at"))]
    click.echo(f"{render_table(headers, rows)}\n\n{LEGEND}")


@command.command("get")
@click.argument("service_id")
@common_options
@pass_state
def get_service(state: CliState, service_id: str) -> None:
    """Show one service with its routes (in precedence order)."""
    client = state.client()
    svc = client.get(f"/v1/services/{service_id}")
    out = state.output()
    if out.machine:
        out.emit(svc)
        return
    click.echo(render_service(svc, peer_names(client)))


def _service_options(*, create: bool):
    """The flags shared by create and update (update also takes the --no- forms)."""

    def deco(func):
        opts = [
            click.option("--source-peer", metavar="PEER_ID",
                         help="Ingress peer (default: the local peer of the answering agent)."),
            click.option("--name", default=None, help="Optional service name."),
            click.option("--transport", type=TRANSPORTS, default="tcp" if create else None,
                         show_default=create, help="Peer-to-peer transport: tcp or kcp."),
            click.option(
                "--requires-interface" if create else "--requires-interface/--no-requires-interface",
                default=None, is_flag=create or None,
                help="Give the service its own MACVLAN interface.",
            ),
            click.option("--desired-ipv4", metavar="CIDR", help="Interface IPv4 address/prefix (DHCP if omitted)."),
            click.option("--desired-ipv6", metavar="CIDR", help="Interface IPv6 address/prefix."),
            click.option(
                "--fully-transparent" if create else "--fully-transparent/--no-fully-transparent",
                default=None, is_flag=create or None,
                help="Keep the client's source address at the destination (needs tcp + interface).",
            ),
            click.option("--bandwidth-limit", type=click.IntRange(min=0), metavar="MBPS",
                         help="Bandwidth limit in Mbps (0 = unlimited)."),
        ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return deco


# CLI flag -> API field
FIELD_OF = {
    "source_peer": "source_peer_id",
    "name": "name",
    "transport": "transport_type",
    "requires_interface": "requires_interface",
    "desired_ipv4": "desired_ipv4_cidr",
    "desired_ipv6": "desired_ipv6_cidr",
    "fully_transparent": "fully_transparent",
    "bandwidth_limit": "bandwidth_limit_mbps",
}


@command.command("create")
@click.option("--target-peer", required=True, metavar="PEER_ID", help="Exit peer (receives the traffic).")
@_service_options(create=True)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --requires-interface: wait until the target peer has created the interface and it has its "
                   "address (static or DHCP), then show its name, MAC and addresses.")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=interface_wait.DEFAULT_TIMEOUT,
              show_default=True, metavar="SECONDS", help="How long --wait waits at most.")
@common_options
@pass_state
def create_service(state: CliState, target_peer: str, wait: bool, wait_timeout: float, **flags: Any) -> None:
    """Create a service from the source peer (default: local) to --target-peer.

    With --requires-interface the command then waits (--wait-timeout, 30 s) until the target peer has created the
    service's MACVLAN and it has its address (--desired-ipv4/--desired-ipv6, or a DHCP lease), and shows its name,
    MAC and addresses; --no-wait returns at once. Still waiting at the timeout (it says for what, and why), or an
    interface error on the target: reported on stderr, exit status 0, since the service was created
    ('arctic services get ID' shows where it stands). With -j/-o json stdout is only the service, as last read.
    """
    body: dict[str, Any] = {"target_peer_id": target_peer, "transport_type": (flags["transport"] or "tcp").lower()}
    for flag, value in flags.items():
        if flag == "transport" or value is None or value is False:
            continue
        body[FIELD_OF[flag]] = value
    client = state.client()
    with cidr_errors_name_the_flags():
        svc = client.post("/v1/services", json=body)
    out = state.output()
    if not (wait and svc.get("requires_interface")):
        show_created(out, svc, client)
        return
    names = peer_names(client)
    svc, ready, notice = wait_and_judge(client, out, svc, timeout=wait_timeout,
                                        target=name_or_id(names, svc.get("target_peer_id")))
    show_created(out, svc, client, names=names, ready=ready, notice=notice)


def wait_and_judge(client: ApiClient, out: Output, svc: dict[str, Any], *, timeout: float,
                   target: str) -> tuple[dict[str, Any], str, str | None]:
    """Wait for the interface: the service as last read, the line saying it is ready ("" if not) and the stderr
    notice saying why not (None if it is)."""
    if not out.machine:
        out.message(f"Waiting up to {timeout:g} s for {target} to create the service interface (--no-wait skips this)")
    try:
        svc, judged = interface_wait.wait_for_interface(client, svc, timeout=timeout, target=target)
    except CliError as err:  # the service exists: a failed read-back must not look like a failed create
        return svc, "", interface_wait.watch_failed_notice(svc, err)
    ready = interface_wait.ready_line(svc, target) if judged.ready else ""
    return svc, ready, interface_wait.outcome_notice(svc, judged, timeout=timeout, target=target)


def show_created(out: Output, svc: dict[str, Any], client: ApiClient, *, names: dict[str, str] | None = None,
                 ready: str = "", notice: str | None = None) -> None:
    """The service block and the documented confirmation (or only the JSON), then what the wait found."""
    if out.machine:
        out.emit(svc)
    else:
        click.echo(render_service(svc, peer_names(client) if names is None else names))
        click.echo(f"\nService created successfully: ID={svc.get('id')}")
        if ready:
            click.echo(ready)
    if notice:
        out.message(notice)


@command.command("update")
@click.argument("service_id")
@_service_options(create=False)
@common_options
@pass_state
@click.pass_context
def update_service(ctx: click.Context, state: CliState, service_id: str, **flags: Any) -> None:
    """Change a service; only the flags given are sent (``--bandwidth-limit 0`` removes the limit)."""
    body = {
        FIELD_OF[flag]: (value.lower() if flag == "transport" else value)
        for flag, value in flags.items()
        if ctx.get_parameter_source(flag) not in (None, ParameterSource.DEFAULT) and value is not None
    }
    if not body:
        raise UsageProblem(
            "nothing to update: give at least one of --source-peer, --name, --transport, --requires-interface, "
            "--desired-ipv4, --desired-ipv6, --fully-transparent, --bandwidth-limit"
        )
    client = state.client()
    with cidr_errors_name_the_flags():
        svc = client.put(f"/v1/services/{service_id}", json=body)
    out = state.output()
    if out.machine:
        out.emit(svc)
        return
    if isinstance(svc, dict) and svc.get("id"):
        click.echo(render_service(svc, peer_names(client)))
        click.echo()
    click.echo(f"Service updated successfully: ID={service_id}")


@command.command("delete")
@click.argument("service_id")
@yes_option
@common_options
@pass_state
def delete_service(state: CliState, service_id: str, yes: bool) -> None:
    """Delete a service, its routes and its interface."""
    confirm_destructive(f"Delete service {service_id} and all its routes?", yes=yes)
    body = state.client().delete(f"/v1/services/{service_id}")
    out = state.output()
    if out.machine:
        out.emit(body if body is not None else {"deleted": True, "id": service_id})
        return
    click.echo(f"Service deleted successfully: ID={service_id}")
