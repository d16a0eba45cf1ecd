"""``stratus vm``: run, list, show, stop, kill, reboot, console, events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import Progress, emit
from client.errors import ClientError
from client.sdk import StratusClient

VM_COLUMNS = ("id", "name", "state", "ready", "ip", "image", "vcpus", "memory_mib", "host")
EVENT_COLUMNS = ("at", "from_state", "to_state", "reason")


def event_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The event table's columns: with ``source`` (broker or site) when from a broker."""
    if any("source" in row for row in rows):
        return (*EVENT_COLUMNS[:1], "source", *EVENT_COLUMNS[1:])
    return EVENT_COLUMNS


#: Shown while waiting as final: a queued request waits for capacity, not for the CLI.
SETTLED_STATES = ("done", "failed", "expired", "queued")


def vm_columns(rows: list[dict[str, Any]], *, owner: bool = False) -> tuple[str, ...]:
    """The table columns for ``rows``: with ``site`` when they come from a broker."""
    columns: tuple[str, ...] = VM_COLUMNS
    if any("site" in row for row in rows):
        columns = (*columns[:3], "site", *columns[3:])
    return ("owner", *columns) if owner else columns


INSTANCE_TYPES = (
    "t1.micro",
    "m1.small",
    "m1.medium",
    "m1.large",
    "m1.xlarge",
    "c1.medium",
    "c1.xlarge",
)


@cli.group()
def vm() -> None:
    """Virtual machines."""


def _context_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--context")
        context[key] = value
    return context


def wait_until(
    api: StratusClient, vm_ids: list[str], goal: str, timeout: float
) -> list[dict[str, Any]]:
    """Poll until every VM reaches ``goal`` (running/ready) or a terminal state, with progress."""
    deadline = time.monotonic() + timeout
    finished: dict[str, dict[str, Any]] = {}
    progress = Progress(f"waiting for {len(vm_ids)} VM(s) to be {goal}")
    try:
        while len(finished) < len(vm_ids):
            if time.monotonic() > deadline:
                raise ClientError(f"timed out after {timeout:.0f} s waiting for VMs to be {goal}")
            states = []
            for vm_id in vm_ids:
                if vm_id in finished:
                    states.append(finished[vm_id]["state"])
                    continue
                current = api.get_vm(vm_id, wait=goal, wait_timeout=1.0)
                reached = current["ready"] if goal == "ready" else current["state"] == "running"
                if reached or current["state"] in SETTLED_STATES:
                    finished[vm_id] = current
                states.append(current["state"] + (" (ready)" if current["ready"] else ""))
            progress.update(", ".join(states))
    finally:
        progress.done()
    return [finished[i] for i in vm_ids]


@vm.command("run")
@click.argument("image")
@click.option(
    "-t",
    "--type",
    "instance_type",
    type=click.Choice(INSTANCE_TYPES),
    help="Instance type (default m1.small).",
)
@click.option("--cpu", type=click.IntRange(1, 256), help="vCPUs (with --ram instead of --type).")
@click.option("--ram", type=click.IntRange(64), help="RAM in MiB (with --cpu).")
@click.option("-n", "--count", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--name", help="VM name (with -n, suffixed -0, -1, ...).")
@click.option(
    "-k",
    "--ssh-key",
    "ssh_key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key file to authorise (repeatable).",
)
@click.option(
    "--user-data",
    type=click.Path(exists=True, dir_okay=False),
    help="cloud-init user data: a #! script or #cloud-config (max 16 KiB).",
)
@click.option(
    "-c",
    "--context",
    "context_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Context value for the guest (repeatable).",
)
@click.option(
    "--host-tag", "host_tags", multiple=True, help="Only hosts with this tag (repeatable)."
)
@click.option("--network", help="Address pool (stratus network list); default: the first.")
@click.option(
    "--network-type",
    type=click.Choice(["public", "local", "private"]),
    help="Broker: a site with a free address in a pool of this type (its default one).",
)
@click.option("--group", help="Share with a group you belong to (its members may manage it).")
@click.option("--address", help="A free address of the pool for this VM (-n 1 only).")
@click.option(
    "--volume", "volumes", multiple=True, metavar="ID", help="Attach read-write (repeatable)."
)
@click.option(
    "--readonly-volume",
    "readonly_volumes",
    multiple=True,
    metavar="ID",
    help="Attach read-only (repeatable).",
)
@click.option(
    "--static-disk",
    "static_disks",
    multiple=True,
    metavar="IMAGE",
    help="Attach this image read-only (repeatable).",
)
@click.option(
    "--ids-file", type=click.Path(dir_okay=False, writable=True), help="Write the VM ids here."
)
@click.option(
    "--wait",
    "wait_for",
    type=click.Choice(["none", "running", "ready"]),
    default="running",
    show_default=True,
    help="Wait until the VMs are running or their guests ready.",
)
@click.option("--site", help="Broker: run on this site only.")
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    metavar="EXPR",
    help="Broker: placement constraint, e.g. 'site in [a, b]' or 'country == FR' (repeatable).",
)
@click.option(
    "--queue", is_flag=True, help="Broker: wait in the queue when no site can take it now."
)
@click.option("--no-burst", is_flag=True, help="Broker: never run on a public cloud (no bursting).")
@click.option("--priority", type=click.IntRange(0), help="Broker: queue priority (higher first).")
@click.option(
    "--deadline", type=click.FloatRange(min=1), help="Broker: seconds a queued request may wait."
)
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for the VMs (with --wait).",
)
@pass_ctx
def run(
    ctx: CliContext,
    image: str,
    instance_type: str | None,
    cpu: int | None,
    ram: int | None,
    count: int,
    name: str | None,
    ssh_key_files: tuple[str, ...],
    user_data: str | None,
    context_pairs: tuple[str, ...],
    host_tags: tuple[str, ...],
    network: str | None,
    network_type: str | None,
    group: str | None,
    address: str | None,
    volumes: tuple[str, ...],
    readonly_volumes: tuple[str, ...],
    static_disks: tuple[str, ...],
    ids_file: str | None,
    wait_for: str,
    site: str | None,
    constraints: tuple[str, ...],
    queue: bool,
    no_burst: bool,
    priority: int | None,
    deadline: float | None,
    timeout: float,
) -> None:
    """Run COUNT VMs of IMAGE (against a broker: placed on a site, burst or queued)."""
    spec: dict[str, Any] = {"image": image, "count": count}
    if instance_type:
        spec["instance_type"] = instance_type
    if cpu is not None or ram is not None:
        if cpu is None or ram is None:
            raise click.UsageError("--cpu and --ram go together")
        spec.update(vcpus=cpu, memory_mib=ram)
    if name:
        spec["name"] = name
    if ssh_key_files:
        spec["ssh_keys"] = [Path(f).read_text().strip() for f in ssh_key_files]
    if user_data:
        spec["user_data"] = Path(user_data).read_text()
    if context_pairs:
        spec["context"] = _context_pairs(context_pairs)
    if host_tags:
        spec["host_tags"] = list(host_tags)
    for key, value in (
        ("network", network),
        ("network_type", network_type),
        ("group", group),
        ("address", address),
    ):
        if value:
            spec[key] = value
    for key, values in (
        ("volumes", volumes),
        ("readonly_volumes", readonly_volumes),
        ("static_disks", static_disks),
    ):
        if values:
            spec[key] = list(values)
    if site:
        spec["site"] = site
    if constraints:
        spec["constraints"] = list(constraints)
    if queue:
        spec["queue"] = True
    if no_burst:
        spec["allow_burst"] = False
    if priority is not None:
        spec["priority"] = priority
    if deadline is not None:
        spec["deadline_seconds"] = deadline
    with ctx.client() as api:
        vms = api.create_vms(spec)
        if ids_file:
            Path(ids_file).write_text("".join(v["id"] + "\n" for v in vms))
        if wait_for != "none":
            vms = wait_until(api, [v["id"] for v in vms], wait_for, timeout)
    emit(vms, ctx.output, vm_columns(vms))
    failed = [v for v in vms if v["state"] == "failed"]
    if failed:
        raise ClientError(f"{len(failed)} VM(s) failed: {failed[0].get('state_reason')}")


@vm.command("list")
@click.option("--all", "all_owners", is_flag=True, help="Admins: every owner's VMs.")
@pass_ctx
def list_(ctx: CliContext, all_owners: bool) -> None:
    """List your VMs (from a broker: on every site and cloud, with their site)."""
    with ctx.client() as api:
        vms, warnings = api.list_vms_with_warnings(all_owners=all_owners)
    for warning in warnings:
        click.echo(f"stratus: warning: {warning}", err=True)
    emit(vms, ctx.output, vm_columns(vms, owner=all_owners))


@vm.command("show")
@click.argument("vm_id")
@pass_ctx
def show(ctx: CliContext, vm_id: str) -> None:
    """Show one VM."""
    with ctx.client() as api:
        emit(api.get_vm(vm_id), ctx.output)


@vm.command("stop")
@click.argument("vm_ids", nargs=-1, required=True)
@click.option(
    "--save", "save_as", metavar="NAME", help="Save the root disk as a new image NAME (one VM)."
)
@click.option("--save-description", default="", help="Description of the saved image.")
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the VMs to stop (with --wait).",
)
@pass_ctx
def stop(
    ctx: CliContext,
    vm_ids: tuple[str, ...],
    save_as: str | None,
    save_description: str,
    wait: bool,
    timeout: float,
) -> None:
    """Stop VMs cleanly (ACPI shutdown; destroyed after the site's timeout)."""
    if save_as is not None and len(vm_ids) != 1:
        raise click.UsageError("--save takes exactly one VM")
    with ctx.client() as api:
        vms = [api.stop_vm(i, save_as=save_as, save_description=save_description) for i in vm_ids]
        if wait:
            progress = Progress("stopping")
            deadline = time.monotonic() + timeout
            try:
                while any(v["state"] not in ("done", "failed") for v in vms):
                    if time.monotonic() > deadline:
                        raise ClientError("timed out waiting for the VMs to stop")
                    time.sleep(0.5)
                    vms = [api.get_vm(v["id"]) for v in vms]
                    progress.update(", ".join(v["state"] for v in vms))
            finally:
                progress.done()
            # At a broker the image is at the VM's site.
            where = vms[0].get("site") if save_as is not None else None
            saved = api.get_image(save_as, site=where) if save_as is not None else None
        else:
            saved = None
    emit(vms, ctx.output, vm_columns(vms))
    if saved is not None:
        if saved["state"] != "ready":
            raise ClientError(f"image {saved['name']} was not saved: {saved['state_reason']}")
        click.echo(f"saved as image {saved['name']} ({saved['size']} bytes)", err=True)


@vm.command("kill")
@click.argument("vm_ids", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also drop a pending save as image.")
@pass_ctx
def kill(ctx: CliContext, vm_ids: tuple[str, ...], force: bool) -> None:
    """Kill VMs now: destroy them and free everything (disks go to quarantine).

    A VM stopping with --save is not killed (its save would be lost) unless
    --force is given; the VM's event log then records the dropped save.
    """
    with ctx.client() as api:
        killed = [api.kill_vm(i, force=force) for i in vm_ids]
    emit(killed, ctx.output, vm_columns(killed))


@vm.command("reboot")
@click.argument("vm_id")
@pass_ctx
def reboot(ctx: CliContext, vm_id: str) -> None:
    """Reboot a VM (hard reset)."""
    with ctx.client() as api:
        rebooted = api.reboot_vm(vm_id)
    emit(rebooted, ctx.output, vm_columns([rebooted]))


@vm.command("console")
@click.argument("vm_id")
@click.option(
    "--tail", type=click.IntRange(1), default=65536, show_default=True, help="Bytes from the end."
)
@pass_ctx
def console(ctx: CliContext, vm_id: str, tail: int) -> None:
    """Print a VM's serial console output."""
    with ctx.client() as api:
        output = api.console(vm_id, tail=tail)
    if ctx.output == "json":
        emit({"vm_id": vm_id, "output": output}, "json")
    else:
        click.echo(output, nl=False)


@vm.command("events")
@click.argument("vm_id")
@pass_ctx
def events(ctx: CliContext, vm_id: str) -> None:
    """Show a VM's event log (state changes with reasons)."""
    with ctx.client() as api:
        found = api.events(vm_id)
    emit(found, ctx.output, event_columns(found))
