"""``stratus whoami`` and ``stratus account`` (site admins)."""

from __future__ import annotations

import click

from client.cli.main import CliContext, cli, pass_ctx
from client.cli.output import emit

ACCOUNT_COLUMNS = ("name", "role", "enabled", "has_password", "display_name", "email")


@cli.command()
@pass_ctx
def whoami(ctx: CliContext) -> None:
    """Show who the service thinks you are: account, identity, groups (VOMS FQANs, OIDC), roles."""
    with ctx.client() as api:
        emit(api.whoami(), ctx.output)


@cli.group()
def account() -> None:
    """Accounts, identities and groups (site admins)."""


@account.command("list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List accounts."""
    with ctx.client() as api:
        emit(api.list_accounts(), ctx.output, ACCOUNT_COLUMNS)


@account.command("show")
@click.argument("name")
@pass_ctx
def show(ctx: CliContext, name: str) -> None:
    """Show an account with its identities and groups."""
    with ctx.client() as api:
        emit(api.account(name), ctx.output)


@account.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "group-admin", "site-admin"]), default="user")
@click.option("--email")
@click.option("--display-name", default="")
@click.option("--password", is_flag=True, help="Prompt for a password (local login).")
@pass_ctx
def create(
    ctx: CliContext, name: str, role: str, email: str | None, display_name: str, password: bool
) -> None:
    """Create an account."""
    spec: dict[str, object] = {"name": name, "role": role, "display_name": display_name}
    if email:
        spec["email"] = email
    if password:
        spec["password"] = click.prompt("password", hide_input=True, confirmation_prompt=True)
    with ctx.client() as api:
        emit(api.create_account(spec), ctx.output)


@account.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(["user", "group-admin", "site-admin"]))
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--password", is_flag=True, help="Prompt for a new password.")
@pass_ctx
def set_(
    ctx: CliContext, name: str, role: str | None, enabled: bool | None, password: bool
) -> None:
    """Change an account's role, enabled flag or password."""
    changes: dict[str, object] = {}
    if role:
        changes["role"] = role
    if enabled is not None:
        changes["enabled"] = enabled
    if password:
        changes["password"] = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if not changes:
        raise click.UsageError("nothing to change: give --role, --enable/--disable or --password")
    with ctx.client() as api:
        emit(api.update_account(name, changes), ctx.output)


@account.command("delete")
@click.argument("name")
@pass_ctx
def delete(ctx: CliContext, name: str) -> None:
    """Delete an account."""
    with ctx.client() as api:
        api.delete_account(name)
    click.echo(f"account {name} deleted")


@account.command("link")
@click.argument("name")
@click.argument("identity")
@click.option(
    "--kind", type=click.Choice(["x509", "oidc", "local"]), default="x509", show_default=True
)
@pass_ctx
def link(ctx: CliContext, name: str, identity: str, kind: str) -> None:
    """Link IDENTITY (a certificate DN, or sub@issuer) to account NAME."""
    with ctx.client() as api:
        emit(api.link_identity(name, identity, kind), ctx.output)


@account.command("add-group")
@click.argument("name")
@click.argument("group")
@click.option("--admin", is_flag=True, help="Make the account a group admin.")
@pass_ctx
def add_group(ctx: CliContext, name: str, group: str, admin: bool) -> None:
    """Add account NAME to GROUP."""
    with ctx.client() as api:
        emit(api.add_to_group(name, group, admin=admin), ctx.output)


@account.command("remove-group")
@click.argument("name")
@click.argument("group")
@pass_ctx
def remove_group(ctx: CliContext, name: str, group: str) -> None:
    """Remove account NAME from GROUP."""
    with ctx.client() as api:
        emit(api.remove_from_group(name, group), ctx.output)
