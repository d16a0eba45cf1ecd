"""``stratus volume``: persistent volumes; ``stratus vm disks|attach-static|detach-disk``."""

from __future__ import annotations

from typing import Any

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit
from client.cli.vm import vm

VOLUME_COLUMNS = ("id", "tag", "size_gib", "state", "visibility", "owner", "origin", "attached")
DISK_COLUMNS = ("vm_id", "device", "kind", "volume_id", "image", "readonly")


def disk_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table columns for ``rows``: with ``site`` when they come from a broker."""
    return (*DISK_COLUMNS, "site") if any("site" in row for row in rows) else DISK_COLUMNS


def volume_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table columns for ``rows``: with ``site`` when they come from a broker."""
    if any("site" in row for row in rows):
        return (*VOLUME_COLUMNS[:2], "site", *VOLUME_COLUMNS[2:])
    return VOLUME_COLUMNS


@cli.group()
def volume() -> None:
    """Persistent volumes (disks whose life is independent of any VM)."""


@volume.command("create")
@click.option(
    "-s", "--size", "size_gib", type=click.IntRange(1, 1024), help="Size in GiB (1-1024)."
)
@click.option("-t", "--tag", default="", help="A label to find the volume by.")
@click.option("--public/--private", default=False, help="Public volumes are usable by all.")
@click.option("--cow", "cow_of", metavar="ID", help="Copy-on-write of this volume.")
@click.option("--image", metavar="NAME", help="Copy this image into the volume.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait for an image copy to finish."
)
@click.option("--site", help="Broker: create it at this site.")
@pass_ctx
def create(
    ctx: CliContext,
    size_gib: int | None,
    tag: str,
    public: bool,
    cow_of: str | None,
    image: str | None,
    wait: bool,
    site: str | None,
) -> None:
    """Create a volume: empty (-s), copy-on-write of another (--cow) or from an image."""
    spec: dict[str, object] = {"tag": tag, "visibility": "public" if public else "private"}
    if site:
        spec["site"] = site
    if size_gib is not None:
        spec["size_gib"] = size_gib
    if cow_of:
        spec["cow_of"] = cow_of
    if image:
        spec["image"] = image
    with ctx.client() as api:
        created = api.create_volume(spec)
        if wait and created["state"] == "creating":
            created = api.get_volume(created["id"], wait=True, wait_timeout=600)
    emit(created, ctx.output, volume_columns([created]))


@volume.command("list")
@click.option("-t", "--tag", help="Only tags matching this regular expression.")
@click.option("--visibility", type=click.Choice(["private", "public"]))
@click.option("--owner", help="Only this owner's volumes.")
@click.option("--all", "all_owners", is_flag=True, help="Admins: every owner's volumes.")
@pass_ctx
def list_(
    ctx: CliContext, tag: str | None, visibility: str | None, owner: str | None, all_owners: bool
) -> None:
    """List your volumes and public ones (from a broker: on every site, with their site)."""
    with ctx.client() as api:
        rows, warnings = api.list_volumes_with_warnings(
            tag=tag, visibility=visibility, owner=owner, all_owners=all_owners
        )
    for warning in warnings:
        click.echo(f"stratus: warning: {warning}", err=True)
    emit(rows, ctx.output, volume_columns(rows))


@volume.command("show")
@click.argument("volume_id")
@pass_ctx
def show(ctx: CliContext, volume_id: str) -> None:
    """Show one volume (with its attachments to your VMs)."""
    with ctx.client() as api:
        emit(api.get_volume(volume_id), ctx.output)


@volume.command("update")
@click.argument("volume_id")
@click.option("-t", "--tag", help="New tag.")
@click.option("--public/--private", "public", default=None, help="New visibility.")
@pass_ctx
def update(ctx: CliContext, volume_id: str, tag: str | None, public: bool | None) -> None:
    """Change a volume's tag or visibility (owner only)."""
    changes: dict[str, object] = {}
    if tag is not None:
        changes["tag"] = tag
    if public is not None:
        changes["visibility"] = "public" if public else "private"
    if not changes:
        raise click.UsageError("give --tag and/or --public/--private")
    with ctx.client() as api:
        emit(api.update_volume(volume_id, changes), ctx.output, VOLUME_COLUMNS)


@volume.command("attach")
@click.argument("volume_id")
@click.argument("vm_id")
@click.option("--readonly", is_flag=True, help="Read-only (shareable by several VMs).")
@pass_ctx
def attach(ctx: CliContext, volume_id: str, vm_id: str, readonly: bool) -> None:
    """Hot-plug a volume into a running VM; prints the guest device (e.g. vdc)."""
    with ctx.client() as api:
        disk = api.attach_volume(volume_id, vm_id, readonly=readonly)
    emit(disk, ctx.output, disk_columns([disk]))


@volume.command("detach")
@click.argument("volume_id")
@click.argument("vm_id", required=False)
@pass_ctx
def detach(ctx: CliContext, volume_id: str, vm_id: str | None) -> None:
    """Hot-unplug a volume (VM_ID may be left out if only one of your VMs has it)."""
    with ctx.client() as api:
        disk = api.detach_volume(volume_id, vm_id)
    emit(disk, ctx.output, disk_columns([disk]))


@volume.command("delete")
@click.argument("volume_ids", nargs=-1, required=True)
@pass_ctx
def delete(ctx: CliContext, volume_ids: tuple[str, ...]) -> None:
    """Delete volumes and their files (owner only; not while attached)."""
    with ctx.client() as api:
        emit([api.delete_volume(v) for v in volume_ids], ctx.output, ("id", "deleted"))


@vm.command("disks")
@click.argument("vm_id")
@pass_ctx
def vm_disks(ctx: CliContext, vm_id: str) -> None:
    """List the volumes and static disks plugged into a VM."""
    with ctx.client() as api:
        disks = api.vm_disks(vm_id)
    emit(disks, ctx.output, disk_columns(disks))


@vm.command("attach-static")
@click.argument("vm_id")
@click.argument("image")
@pass_ctx
def attach_static(ctx: CliContext, vm_id: str, image: str) -> None:
    """Hot-plug the image IMAGE read-only into a running VM (a static disk)."""
    with ctx.client() as api:
        disk = api.attach_static_disk(vm_id, image)
    emit(disk, ctx.output, disk_columns([disk]))


@vm.command("detach-disk")
@click.argument("vm_id")
@click.argument("device")
@pass_ctx
def detach_disk(ctx: CliContext, vm_id: str, device: str) -> None:
    """Hot-unplug the disk at guest DEVICE (e.g. vdc) from a running VM."""
    with ctx.client() as api:
        disk = api.detach_disk(vm_id, device)
    emit(disk, ctx.output, disk_columns([disk]))
