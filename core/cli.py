"""Helpers for service packages that add commands to ``stratus`` (entry points ``stratus.cli``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from core.config import ConfigError, ConfigT, load_config

F = TypeVar("F", bound=Callable[..., Any])


def subgroup(parent: click.Group, name: str, help_text: str) -> click.Group:
    """The sub-group ``name`` of ``parent``, created if no other package made it yet."""
    existing = parent.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    group = click.Group(name, help=help_text)
    parent.add_command(group)
    return group


def serve_options(kind: str) -> Callable[[F], F]:
    """The options of every ``stratus serve KIND``: --config, --ready-file, --log-level."""

    def decorate(command: F) -> F:
        command = click.option(
            "--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"])
        )(command)
        command = click.option(
            "--ready-file",
            type=click.Path(path_type=Path),
            help="Write the listening URL here once up.",
        )(command)
        return click.option(
            "--config",
            "config_file",
            required=True,
            type=click.Path(path_type=Path),
            help=f"Configuration (TOML); see `stratus config example {kind}`.",
        )(command)

    return decorate


def load_service_config(config_file: Path, model: type[ConfigT], log_level: str) -> ConfigT:
    """Read and validate ``config_file`` (one-line CLI error if wrong), then start logging."""
    try:
        config = load_config(config_file, model)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return config
