"""Entry point of the ``stratus`` command.

Global options select the endpoint (see ``client.config``) and the output
format. Service-side commands (``serve``, ``image build-guest``, ``config
example``...) are contributed by the installed service packages through the
``stratus.cli`` entry-point group, so the client itself only talks HTTP.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import click

from client.config import Endpoint, resolve_endpoint
from client.errors import ApiError, ClientError
from client.sdk import StratusClient


@dataclass
class CliContext:
    endpoint_name: str | None
    url: str | None
    token: str | None
    cert: str | None
    config_path: Path | None
    output: str

    def endpoint(self) -> Endpoint:
        return resolve_endpoint(
            self.endpoint_name,
            url=self.url,
            token=self.token,
            cert=self.cert,
            config_path=self.config_path,
        )

    def client(self) -> StratusClient:
        return StratusClient.from_endpoint(self.endpoint())


pass_ctx = click.make_pass_decorator(CliContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-e",
    "--endpoint",
    "endpoint_name",
    help="Named endpoint from the config file [STRATUS_ENDPOINT].",
)
@click.option("--url", help="API base URL, e.g. http://127.0.0.1:8440 [STRATUS_URL].")
@click.option("--token", help="API or OIDC bearer token [STRATUS_TOKEN].")
@click.option("--cert", help="PEM certificate+key or grid proxy [STRATUS_CERT].")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Client config file [STRATUS_CONFIG] (default ~/.config/stratus/config.toml).",
)
@click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.version_option(package_name="stratus-federation")
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint_name: str | None,
    url: str | None,
    token: str | None,
    cert: str | None,
    config_path: Path | None,
    output: str,
) -> None:
    """Stratus: run VMs on a federated IaaS cloud."""
    ctx.obj = CliContext(endpoint_name, url, token, cert, config_path, output)


# Modules under client/cli/ that add user commands to ``cli`` when imported.
COMMAND_MODULES = ("vm", "images", "accounts", "site", "volume", "network")


def _load_plugins() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(f"client.cli.{module}")
    for entry in entry_points(group="stratus.cli"):
        register = entry.load()
        register(cli)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors become one line on stderr and exit status 1 (2 for usage)."""
    _load_plugins()
    try:
        cli.main(args=argv, prog_name="stratus", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("stratus: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ApiError as exc:
        click.echo(f"stratus: error: {exc.message} ({exc.code}, HTTP {exc.status})", err=True)
        return 1
    except ClientError as exc:
        click.echo(f"stratus: error: {exc}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
