"""The user's client configuration: named endpoints, from a file and the environment.

``~/.config/stratus/config.toml`` (or ``$STRATUS_CONFIG``)::

    default = "local"

    [endpoints.local]
    url = "http://127.0.0.1:8440"
    token = "..."                 # or token_file = "~/.config/stratus/local.token"

    [endpoints.fed]
    url = "https://broker.example.org:8443"
    cert = "/tmp/x509up_u1000"    # grid proxy or PEM cert+key
    ca = "/etc/grid-security/certificates"

Precedence: command-line option, then environment (``STRATUS_ENDPOINT``,
``STRATUS_URL``, ``STRATUS_TOKEN``, ``STRATUS_CERT``, ``STRATUS_CA``), then the
named endpoint in the file. With no token and no certificate configured, the
user's grid proxy is used if there is one (``$X509_USER_PROXY``, then
``/tmp/x509up_u<uid>``), as grid tools do.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import ClientConfigError


def default_config_path() -> Path:
    if "STRATUS_CONFIG" in os.environ:
        return Path(os.environ["STRATUS_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "stratus" / "config.toml"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one Stratus API (a site agent or a broker)."""

    name: str
    url: str
    token: str | None = None
    cert: str | None = None
    ca: str | None = None


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientConfigError(f"{path}: {exc}") from exc


def resolve_endpoint(
    name: str | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    cert: str | None = None,
    config_path: Path | None = None,
) -> Endpoint:
    """The endpoint to use, merging options, environment and the config file."""
    data = _read_file(config_path or default_config_path())
    endpoints = data.get("endpoints", {})
    if not isinstance(endpoints, dict):
        raise ClientConfigError("'endpoints' in the config file must be a table")
    name = name or os.environ.get("STRATUS_ENDPOINT") or data.get("default")
    entry: dict[str, Any] = {}
    if name is not None:
        if name not in endpoints:
            if url is None and "STRATUS_URL" not in os.environ:
                known = ", ".join(sorted(endpoints)) or "none configured"
                raise ClientConfigError(f"unknown endpoint {name!r} (known: {known})")
        else:
            entry = endpoints[name]
    final_url = url or os.environ.get("STRATUS_URL") or entry.get("url")
    if not final_url:
        raise ClientConfigError(
            "no endpoint: give --url, set STRATUS_URL, or add one to " + str(default_config_path())
        )
    final_token = token or os.environ.get("STRATUS_TOKEN") or entry.get("token")
    if final_token is None and entry.get("token_file"):
        token_path = Path(str(entry["token_file"])).expanduser()
        try:
            final_token = token_path.read_text().strip()
        except OSError as exc:
            raise ClientConfigError(f"cannot read token_file {token_path}: {exc}") from exc
    final_cert = cert or os.environ.get("STRATUS_CERT") or entry.get("cert")
    if final_cert is None and final_token is None:
        final_cert = default_grid_proxy()
    return Endpoint(
        name=name or "(command line)",
        url=str(final_url).rstrip("/"),
        token=final_token,
        cert=final_cert,
        ca=os.environ.get("STRATUS_CA") or entry.get("ca"),
    )


def default_grid_proxy() -> str | None:
    """The grid proxy as grid tools find it: ``$X509_USER_PROXY``, then ``/tmp/x509up_u<uid>``.

    Only used when no token is configured; ``None`` if neither file exists.
    """
    candidates = [os.environ.get("X509_USER_PROXY"), f"/tmp/x509up_u{os.getuid()}"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None
