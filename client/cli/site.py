"""``stratus site``: the sites and public clouds of a federation (against a broker)."""

from __future__ import annotations

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit

SITE_COLUMNS = (
    "name",
    "kind",
    "status",
    "simulated",
    "free_cpus",
    "free_memory_mib",
    "largest_free_cpus",
    "price_per_hour",
    "vms",
    "last_heartbeat",
)


@cli.group()
def site() -> None:
    """Sites and public clouds of the federation (broker endpoints)."""


@site.command("list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List the federation's sites and clouds: status, whether its hosts are simulated
    (fake://: its VMs run nothing), free capacity, price, your VMs there."""
    with ctx.client() as api:
        emit(api.list_sites(), ctx.output, SITE_COLUMNS)


@site.command("show")
@click.argument("name")
@pass_ctx
def show(ctx: CliContext, name: str) -> None:
    """Show one site or cloud (status and the reason when unavailable, capacity, images)."""
    with ctx.client() as api:
        emit(api.get_site(name), ctx.output)
