"""Service-side ``stratus`` commands contributed by the broker (entry point ``stratus.cli``):
``stratus serve broker --config FILE`` and ``stratus config example broker``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from core.cli import subgroup
from core.config import ConfigError, load_config


def register(cli: click.Group) -> None:
    """Add the broker's commands to the root ``stratus`` group."""
    serve = subgroup(cli, "serve", "Run Stratus services.")
    serve.add_command(serve_broker)
    config = subgroup(cli, "config", "Configuration helpers.")
    example = subgroup(config, "example", "Print a commented example configuration.")
    example.add_command(example_broker)


@click.command("broker")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(path_type=Path),
    help="Broker configuration (TOML); see `stratus config example broker`.",
)
@click.option(
    "--ready-file", type=click.Path(path_type=Path), help="Write the listening URL here once up."
)
@click.option(
    "--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
)
def serve_broker(config_file: Path, ready_file: Path | None, log_level: str) -> None:
    """Run the federation broker."""
    from broker.config import BrokerConfig
    from broker.server import serve

    try:
        config = load_config(config_file, BrokerConfig)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = config.check_files()
    if problems:
        raise click.ClickException(f"{config_file}: " + "; ".join(problems))
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config, ready_file=ready_file))


@click.command("broker")
def example_broker() -> None:
    """Print an example broker configuration."""
    from broker.config import EXAMPLE_BROKER_CONFIG

    click.echo(EXAMPLE_BROKER_CONFIG, nl=False)
