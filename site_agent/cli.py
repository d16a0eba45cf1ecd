"""Service-side ``stratus`` commands contributed by the site agent (entry point ``stratus.cli``)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import click

from auth.tokens import hash_token
from core.cli import load_service_config, serve_options, subgroup


def register(cli: click.Group) -> None:
    """Add the site agent's commands to the root ``stratus`` group."""
    serve = subgroup(cli, "serve", "Run Stratus services.")
    serve.add_command(serve_site)
    config = subgroup(cli, "config", "Configuration helpers.")
    example = subgroup(config, "example", "Print a commented example configuration.")
    example.add_command(example_site)
    image = subgroup(cli, "image", "Images.")
    image.add_command(build_guest)
    token = subgroup(cli, "token", "API tokens for the site configuration.")
    token.add_command(token_new)
    token.add_command(token_hash)


@click.command("site")
@serve_options("site")
def serve_site(config_file: Path, ready_file: Path | None, log_level: str) -> None:
    """Run a site agent."""
    from site_agent.config import SiteConfig
    from site_agent.server import serve

    config = load_service_config(config_file, SiteConfig, log_level)
    asyncio.run(serve(config, ready_file=ready_file))


@click.command("site")
def example_site() -> None:
    """Print an example site agent configuration."""
    from site_agent.config import EXAMPLE_SITE_CONFIG

    click.echo(EXAMPLE_SITE_CONFIG, nl=False)


@click.command("build-guest")
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for vmlinuz, initrd.img and the root disk.",
)
def build_guest(output: Path) -> None:
    """Build the small busybox test guest from local Debian packages (no download)."""
    from site_agent.guest.builder import build_guest as build
    from site_agent.guest.errors import GuestImageError

    try:
        guest = build(output)
    except GuestImageError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"kernel:  {guest.kernel}\ninitrd:  {guest.initrd}\n"
        f"disk:    {guest.disk}\ncmdline: {guest.cmdline}"
    )


@click.command("new")
@click.option("--account", required=True, help="Account the token logs in as.")
@click.option("--admin", is_flag=True, help="Give the token the site-admin role.")
def token_new(account: str, admin: bool) -> None:
    """Make a new random API token; prints the token (give it to the user) and the config entry."""
    token = secrets.token_urlsafe(32)
    click.echo(f"token: {token}", err=True)
    click.echo("[[auth.tokens]]")
    click.echo(f'token_hash = "{hash_token(token)}"')
    click.echo(f'account = "{account}"')
    click.echo(f"admin = {'true' if admin else 'false'}")


@click.command("hash")
@click.argument("token")
def token_hash(token: str) -> None:
    """Print the hash of TOKEN as stored in the site configuration."""
    click.echo(hash_token(token))
