"""Service-side ``stratus`` commands contributed by the broker (entry point ``stratus.cli``):
``stratus serve broker --config FILE`` and ``stratus config example broker``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from core.cli import load_service_config, serve_options, subgroup


def register(cli: click.Group) -> None:
    """Add the broker's commands to the root ``stratus`` group."""
    serve = subgroup(cli, "serve", "Run Stratus services.")
    serve.add_command(serve_broker)
    config = subgroup(cli, "config", "Configuration helpers.")
    example = subgroup(config, "example", "Print a commented example configuration.")
    example.add_command(example_broker)


@click.command("broker")
@serve_options("broker")
def serve_broker(config_file: Path, ready_file: Path | None, log_level: str) -> None:
    """Run the federation broker."""
    from broker.config import BrokerConfig
    from broker.server import serve

    config = load_service_config(config_file, BrokerConfig, log_level)
    problems = config.check_files()
    if problems:
        raise click.ClickException(f"{config_file}: " + "; ".join(problems))
    asyncio.run(serve(config, ready_file=ready_file))


@click.command("broker")
def example_broker() -> None:
    """Print an example broker configuration."""
    from broker.config import EXAMPLE_BROKER_CONFIG

    click.echo(EXAMPLE_BROKER_CONFIG, nl=False)
