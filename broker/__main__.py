"""``python -m broker ...``: the ``stratus`` command with the broker's commands registered.

Until the ``broker = "broker.cli:register"`` entry point is installed, this is
how to run ``python -m broker serve broker --config FILE``.
"""

from __future__ import annotations

import sys

from broker.cli import register
from client.cli.main import cli, main

if __name__ == "__main__":
    register(cli)
    sys.exit(main())
