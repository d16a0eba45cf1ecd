"""``stratus network``: the address pools of the endpoint."""

from __future__ import annotations

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit

NETWORK_COLUMNS = ("name", "type", "cidr", "gateway", "default", "size", "leased", "free")
LEASE_COLUMNS = ("address", "mac", "vm_id", "owner", "created_at")


@cli.group()
def network() -> None:
    """Address pools (public, local, private) and leases."""


@network.command("list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List the pools with their size and free addresses (from a broker: every site's)."""
    with ctx.client() as api:
        rows, warnings = api.list_networks_with_warnings()
    for warning in warnings:
        click.echo(f"stratus: warning: {warning}", err=True)
    columns: tuple[str, ...] = NETWORK_COLUMNS
    if any("site" in row for row in rows):
        columns = ("site", *NETWORK_COLUMNS)
    emit(rows, ctx.output, columns)


@network.command("show")
@click.argument("name")
@click.option("--site", help="Broker: the pool of this site (needed when several have NAME).")
@pass_ctx
def show(ctx: CliContext, name: str, site: str | None) -> None:
    """Show a pool and its leases (every lease for admins, your own otherwise)."""
    with ctx.client() as api:
        detail = api.get_network(name, site=site)
    if ctx.output == "json":
        emit(detail, "json")
        return
    leases = detail.pop("leases")
    emit(detail, "table")
    emit(leases, "table", LEASE_COLUMNS)
