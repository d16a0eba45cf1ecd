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
    """List the pools with their size and free addresses."""
    with ctx.client() as api:
        emit(api.list_networks(), ctx.output, NETWORK_COLUMNS)


@network.command("show")
@click.argument("name")
@pass_ctx
def show(ctx: CliContext, name: str) -> None:
    """Show a pool and its leases (every lease for admins, your own otherwise)."""
    with ctx.client() as api:
        detail = api.get_network(name)
    if ctx.output == "json":
        emit(detail, "json")
        return
    leases = detail.pop("leases")
    emit(detail, "table")
    emit(leases, "table", LEASE_COLUMNS)
