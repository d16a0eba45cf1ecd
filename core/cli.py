"""Helpers for service packages that add commands to ``stratus`` (entry points ``stratus.cli``)."""

from __future__ import annotations

import click


def subgroup(parent: click.Group, name: str, help_text: str) -> click.Group:
    """The sub-group ``name`` of ``parent``, created if no other package made it yet."""
    existing = parent.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    group = click.Group(name, help=help_text)
    parent.add_command(group)
    return group
