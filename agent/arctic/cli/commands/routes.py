"""``arctic routes`` (alias ``route``): list, add, update, delete; every subcommand takes ``--service``."""

from __future__ import annotations

from typing import Any

import click

from arctic.cli.commands._shared import cidr_errors_name_the_flags, route_table
from arctic.cli.context import CliState, common_options, confirm_destructive, pass_state, yes_option
from arctic.cli.errors import UsageProblem


@click.group("routes")
def command() -> None:
    """Routes: which traffic (source/destination CIDR) a service carries."""


def service_option(func):
    return click.option("--service", "service_id", required=True, metavar="SERVICE_ID", help="The service.")(func)


def route_option(func):
    return click.option("--route", "route_id", required=True, type=int, metavar="ROUTE_ID",
                        help="Route id (an integer, per service).")(func)


def cidr_options(func):
    func = click.option("--dest-cidr", metavar="CIDR", help="Destination network, e.g. 192.168.100.0/24.")(func)
    return click.option("--source-cidr", metavar="CIDR", help="Source network, e.g. 10.0.0.0/8.")(func)


@command.command("list")
@service_option
@common_options
@pass_state
def list_routes(state: CliState, service_id: str) -> None:
    """List a service's routes in precedence order (most preferred first)."""
    routes = state.client().get(f"/v1/services/{service_id}/routes")
    state.output().emit(routes, route_table)


@command.command("add")
@service_option
@click.option("--priority", required=True, type=int, help="Higher wins when specificity is equal.")
@cidr_options
@common_options
@pass_state
def add_route(
    state: CliState, service_id: str, priority: int, source_cidr: str | None, dest_cidr: str | None
) -> None:
    """Add a route; give --source-cidr, --dest-cidr or both."""
    if not source_cidr and not dest_cidr:
        raise UsageProblem("at least one of --source-cidr or --dest-cidr is required")
    route: dict[str, Any] = {"priority": priority}
    if source_cidr:
        route["source_cidr"] = source_cidr
    if dest_cidr:
        route["dest_cidr"] = dest_cidr
    with cidr_errors_name_the_flags():
        result = state.client().post(f"/v1/services/{service_id}/routes", json={"routes": [route]})
    ids = list(result.get("route_ids") or []) if isinstance(result, dict) else []
    count = result.get("count", len(ids)) if isinstance(result, dict) else len(ids)
    out = state.output()
    if out.machine:
        out.emit(result)
        return
    click.echo(f"Route IDs: {', '.join(str(i) for i in ids)}")
    click.echo(f"Count: {count}")
    for rid in ids:
        click.echo(f"Route added successfully: ID={rid}, Priority={priority}")


@command.command("update")
@service_option
@route_option
@click.option("--priority", type=int, default=None, help="New priority.")
@cidr_options
@common_options
@pass_state
def update_route(
    state: CliState,
    service_id: str,
    route_id: int,
    priority: int | None,
    source_cidr: str | None,
    dest_cidr: str | None,
) -> None:
    """Change a route's priority and/or CIDRs; only the flags given are sent."""
    body: dict[str, Any] = {}
    if priority is not None:
        body["priority"] = priority
    if source_cidr is not None:
        body["source_cidr"] = source_cidr
    if dest_cidr is not None:
        body["dest_cidr"] = dest_cidr
    if not body:
        raise UsageProblem("nothing to update: give at least one of --priority, --source-cidr, --dest-cidr")
    with cidr_errors_name_the_flags():
        result = state.client().put(f"/v1/services/{service_id}/routes/{route_id}", json=body)
    out = state.output()
    if out.machine:
        out.emit(result)
        return
    shown = result if isinstance(result, dict) and "id" in result else {"id": route_id, **body}
    click.echo(route_table([shown]))
    click.echo(f"\nRoute updated successfully: ID={route_id}")


@command.command("delete")
@service_option
@route_option
@yes_option
@common_options
@pass_state
def delete_route(state: CliState, service_id: str, route_id: int, yes: bool) -> None:
    """Delete one route of a service."""
    confirm_destructive(f"Delete route {route_id} of service {service_id}?", yes=yes)
    body = state.client().delete(f"/v1/services/{service_id}/routes/{route_id}")
    out = state.output()
    if out.machine:
        out.emit(body if body is not None else {"deleted": True, "id": route_id})
        return
    click.echo(f"Route deleted successfully: ID={route_id}")
