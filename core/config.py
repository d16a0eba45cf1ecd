"""Loading service configuration files (TOML) into pydantic models.

Config errors are reported as one readable line per problem, never as a
traceback: ``ConfigError`` carries the file name and the bad fields.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.http import validation_details

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid."""


class StrictModel(BaseModel):
    """Base for config and request models: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def load_config(path: Path, model: type[ConfigT]) -> ConfigT:
    """Read the TOML file at ``path`` and validate it as ``model``."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{d['field']}: {d['problem']}" for d in validation_details(exc))
        raise ConfigError(f"{path}: {problems}") from exc
