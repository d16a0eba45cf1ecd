"""``stratus image``: images offered by the endpoint."""

from __future__ import annotations

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit


@cli.group()
def image() -> None:
    """Images."""


@image.command("list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List the images you can boot."""
    with ctx.client() as api:
        emit(
            api.list_images(),
            ctx.output,
            ("name", "format", "direct_kernel_boot", "available", "description"),
        )


@cli.group()
def host() -> None:
    """Hypervisor hosts (site admins)."""


@host.command("list")
@pass_ctx
def hosts_list(ctx: CliContext) -> None:
    """List the site's hypervisor hosts and their load."""
    with ctx.client() as api:
        emit(
            api.list_hosts(),
            ctx.output,
            (
                "uri",
                "available",
                "accel",
                "cpus",
                "memory_mib",
                "used_vcpus",
                "used_memory_mib",
                "vms",
            ),
        )
