"""Printing results as tables or JSON, and progress while waiting."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import click


def emit(data: Any, fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print ``data`` (a dict or a list of dicts) as JSON or as a table of ``columns``."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data if isinstance(data, list) else [data]
    if columns is None:
        for row in rows:
            for key, value in row.items():
                click.echo(f"{key:>14}: {_cell(value)}")
            click.echo("")
        return
    table(rows, columns)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value) or "-"  # a broker's SITES: site-a,site-b
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


class Progress:
    """State changes on stderr, with a spinner when stderr is a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, label: str) -> None:
        self.label = label
        self.last: str | None = None
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.frame = 0

    def update(self, status: str) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            self.frame = (self.frame + 1) % len(self.FRAMES)
            sys.stderr.write(
                f"\r{self.FRAMES[self.frame]} {self.label}: {status} ({elapsed:4.1f}s)\x1b[K"
            )
            sys.stderr.flush()
        elif status != self.last:
            sys.stderr.write(f"{self.label}: {status} ({elapsed:.1f}s)\n")
        self.last = status

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
