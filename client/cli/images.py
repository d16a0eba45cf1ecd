"""``stratus image``: list, register, show, delete images; compute a file's size and checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit, table

IMAGE_COLUMNS = ("name", "state", "format", "source", "owner", "size", "last_used_at")


def image_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table columns for ``rows``: with ``sites`` when they come from a broker."""
    if any("sites" in row for row in rows):
        return (*IMAGE_COLUMNS, "sites")
    return IMAGE_COLUMNS


@cli.group()
def image() -> None:
    """Images."""


@image.command("list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List the images you can boot, with their cache state (from a broker: every
    site's, with the SITES that have each)."""
    with ctx.client() as api:
        images, warnings = api.list_images_with_warnings()
    for warning in warnings:
        click.echo(f"stratus: warning: {warning}", err=True)
    emit(images, ctx.output, image_columns(images))


def _boot_file(role: str, url: str | None, size: int | None, sha256: str | None) -> Any:
    if url is None:
        if size is not None or sha256 is not None:
            raise click.UsageError(f"--{role}-size/--{role}-sha256 need --{role}")
        return None
    if size is None or sha256 is None:
        raise click.UsageError(f"--{role} needs --{role}-size and --{role}-sha256")
    return {"url": url, "size": size, "sha256": sha256}


@image.command("register")
@click.argument("name")
@click.argument("url")
@click.option("--size", type=click.IntRange(1), required=True, help="Exact size in bytes.")
@click.option("--sha1", help="SHA-1 of the file (hex).")
@click.option("--sha256", help="SHA-256 of the file (hex); give it and/or --sha1.")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), default="qcow2")
@click.option("--kernel", "kernel_url", metavar="URL", help="Kernel for direct kernel boot.")
@click.option("--kernel-size", type=click.IntRange(1))
@click.option("--kernel-sha256")
@click.option("--initrd", "initrd_url", metavar="URL", help="Initrd (with --kernel).")
@click.option("--initrd-size", type=click.IntRange(1))
@click.option("--initrd-sha256")
@click.option("--cmdline", help="Kernel command line (with --kernel).")
@click.option("--description", default="")
@click.option("--public", is_flag=True, help="Bootable by every user (site admins).")
@click.option("--site", help="Broker: register it at this site.")
@click.option(
    "--all-sites", is_flag=True, help="Broker: register it at every site that accepts it."
)
@pass_ctx
def register(
    ctx: CliContext,
    name: str,
    url: str,
    size: int,
    sha1: str | None,
    sha256: str | None,
    fmt: str,
    kernel_url: str | None,
    kernel_size: int | None,
    kernel_sha256: str | None,
    initrd_url: str | None,
    initrd_size: int | None,
    initrd_sha256: str | None,
    cmdline: str | None,
    description: str,
    public: bool,
    site: str | None,
    all_sites: bool,
) -> None:
    """Register image NAME from URL (http(s)://, or file:/// for site admins).

    Nothing is downloaded now: the first VM that uses the image fetches it
    and checks it against --size and the checksums before booting from it.
    `stratus image digest FILE` prints the values to give. Against a broker
    say where: --site NAME, or --all-sites (each site's answer is shown).
    """
    if sha1 is None and sha256 is None:
        raise click.UsageError("give --sha256 and/or --sha1")
    if site is not None and all_sites:
        raise click.UsageError("give --site or --all-sites, not both")
    spec: dict[str, Any] = {"name": name, "url": url, "size": size, "format": fmt}
    spec.update({k: v for k, v in (("sha1", sha1), ("sha256", sha256)) if v is not None})
    kernel = _boot_file("kernel", kernel_url, kernel_size, kernel_sha256)
    initrd = _boot_file("initrd", initrd_url, initrd_size, initrd_sha256)
    if kernel is not None:
        spec["kernel"] = kernel
    if initrd is not None:
        spec["initrd"] = initrd
    if cmdline is not None:
        spec["cmdline"] = cmdline
    if description:
        spec["description"] = description
    if public:
        spec["public"] = True
    if site is not None:
        spec["site"] = site
    if all_sites:
        spec["all_sites"] = True
    with ctx.client() as api:
        image = api.register_image(spec)
    if ctx.output == "json":
        emit(image, "json")
        return
    registrations = image.pop("registrations", None)
    emit(image, ctx.output)
    if registrations:  # a broker's: what each site answered
        table(registrations, ("site", "registered", "status", "code", "message"))


@image.command("show")
@click.argument("name")
@click.option("--site", help="Broker: the image of this site (default: every site's).")
@pass_ctx
def show(ctx: CliContext, name: str, site: str | None) -> None:
    """Show one image: source, checksums, cache state, last use."""
    with ctx.client() as api:
        emit(api.get_image(name, site=site), ctx.output)


@image.command("delete")
@click.argument("names", nargs=-1, required=True)
@click.option("--site", help="Broker: delete it at this site (needed when several have it).")
@pass_ctx
def delete(ctx: CliContext, names: tuple[str, ...], site: str | None) -> None:
    """Delete images you own (refused while a VM or volume uses one)."""
    with ctx.client() as api:
        deleted = [api.delete_image(n, site=site) for n in names]
    columns = (
        ("name", "freed_bytes", "site")
        if site or any("site" in d for d in deleted)
        else (
            "name",
            "freed_bytes",
        )
    )
    emit(deleted, ctx.output, columns)


@image.command("digest")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def digest(ctx: CliContext, path: Path) -> None:
    """Print the size, SHA-1 and SHA-256 of a local file (what `image register` needs)."""
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            size += len(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    emit(
        {"path": str(path), "size": size, "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest()},
        ctx.output,
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
