"""The guest context agent's parsers, run on the build host with the guest's shell (busybox sh).

``agent.sh`` defines its functions without running anything when sourced with
``STRATUS_AGENT_LIB=1``, and writes below ``STRATUS_AGENT_ROOT``: so the
meta-data and cloud-config parsing, and the shell quoting of context values,
can be checked on many inputs in milliseconds. The boot tests check the same
code inside a real guest.
"""

from __future__ import annotations

import random
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from core.guest_context import CONTEXT_MAX_KEYS
from site_agent.context.cidata import ContextSeed, render_meta_data
from tests.helpers import require_tool

INSTANCE_ID = "0b6c2d6e-3f1a-4c55-9a7e-0d4f3c2b1a00"


@pytest.fixture(scope="module")
def busybox() -> str:
    return require_tool("busybox")


@pytest.fixture
def agent_root(tmp_path: Path) -> Path:
    root = tmp_path / "guest"
    for directory in ("run/stratus/cidata", "etc/stratus", "root"):
        (root / directory).mkdir(parents=True)
    return root


def run_agent(busybox: str, root: Path, script: str) -> subprocess.CompletedProcess[bytes]:
    """Source agent.sh (functions only) under busybox sh, then run ``script``."""
    agent = resources.files("site_agent.guest") / "files" / "agent.sh"
    with resources.as_file(agent) as agent_path:
        return subprocess.run(
            [busybox, "sh", "-c", f'. "{agent_path}"\n{script}'],
            env={
                "STRATUS_AGENT_LIB": "1",
                "STRATUS_AGENT_ROOT": str(root),
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            check=True,
            timeout=60,
        )


def sourced_values(busybox: str, context_file: Path, keys: list[str]) -> list[str]:
    """Source ``context_file`` in busybox sh and return the values of ``keys`` (NUL-separated)."""
    printf = " ".join(f'"${key}"' for key in keys)
    result = subprocess.run(
        [busybox, "sh", "-c", f'. "{context_file}" && printf "%s\\0" {printf}'],
        capture_output=True,
        check=True,
        timeout=60,
        cwd=context_file.parent,
    )
    return result.stdout.decode().split("\0")[:-1]


def _random_values(count: int) -> list[str]:
    rng = random.Random(20240611)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list("'''\"\"\\\\$`éü✓€")
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def test_context_values_round_trip_through_yaml_and_shell(busybox: str, agent_root: Path) -> None:
    values = [
        "$(touch pwned)",
        "`touch pwned`",
        "'; touch pwned; echo '",
        "''",
        "'",
        "",
        " ",
        "\\",
        "a: b # c",
        *_random_values(CONTEXT_MAX_KEYS - 9),  # as many keys as a create may have
    ]
    context = {f"K{i}": value for i, value in enumerate(values)}
    seed = ContextSeed(instance_id=INSTANCE_ID, hostname="h", context=context)
    (agent_root / "run/stratus/cidata/meta-data").write_text(render_meta_data(seed))

    result = run_agent(busybox, agent_root, 'apply_meta_data\necho "ID=$INSTANCE_ID"')

    assert f"ID={INSTANCE_ID}" in result.stdout.decode()
    context_file = agent_root / "etc/stratus/context"
    lines = context_file.read_text().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == list(context)
    assert sourced_values(busybox, context_file, list(context)) == values
    assert not (context_file.parent / "pwned").exists()


def test_meta_data_keys_and_bad_entries(busybox: str, agent_root: Path) -> None:
    meta = (
        "instance-id: not valid; reboot\n"
        "local-hostname: web-1\n"
        "public-keys:\n"
        "  - 'ssh-ed25519 AAAA first'\n"
        "  - ssh-ed25519 BBBB second\n"
        "stratus-context:\n"
        "  GOOD: 'yes'\n"
        "  BAD-KEY: 'x'\n"
        "  1ST: 'y'\n"
        "  PLAIN: unquoted value\n"
        "other:\n"
        "  IGNORED: 'z'\n"
    )
    (agent_root / "run/stratus/cidata/meta-data").write_text(meta)

    result = run_agent(
        busybox, agent_root, 'apply_meta_data\necho "ID=$INSTANCE_ID HOST=$LOCAL_HOSTNAME"'
    )
    out = result.stdout.decode()

    assert "ID=none HOST=web-1" in out  # the bad instance id is refused
    assert "stratus-agent: bad instance-id" in out
    assert (agent_root / "etc/stratus/context").read_text() == (
        "GOOD='yes'\nPLAIN='unquoted value'\n"
    )
    assert (agent_root / "root/.ssh/authorized_keys").read_text() == (
        "ssh-ed25519 AAAA first\nssh-ed25519 BBBB second\n"
    )
    assert (agent_root / "root/.ssh/authorized_keys").stat().st_mode & 0o777 == 0o600


def test_cloud_config_ssh_authorized_keys(busybox: str, agent_root: Path) -> None:
    user_data = agent_root / "run/stratus/cidata/user-data"
    user_data.write_text(
        "#cloud-config\n"
        "hostname: ignored\n"
        "ssh_authorized_keys:\n"
        "  - ssh-ed25519 AAAA one\n"
        "  - 'ssh-ed25519 BBBB two'\n"
        '  - "ssh-rsa CCCC three"\n'
        "packages:\n"
        "  - not-a-key\n"
    )

    result = run_agent(busybox, agent_root, 'prepare_user_data\necho "KEYS=$SSH_KEYS"')

    assert "KEYS=3" in result.stdout.decode()
    assert (agent_root / "root/.ssh/authorized_keys").read_text() == (
        "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two\nssh-rsa CCCC three\n"
    )


def test_script_user_data_is_prepared_not_run(busybox: str, agent_root: Path) -> None:
    (agent_root / "run/stratus/cidata/user-data").write_text("#!/bin/sh\ntouch ran\n")

    result = run_agent(busybox, agent_root, 'prepare_user_data\necho "SCRIPT=$USER_SCRIPT"')

    script = agent_root / "run/stratus/user-data"
    assert f"SCRIPT={script}" in result.stdout.decode()
    assert script.read_text() == "#!/bin/sh\ntouch ran\n"
    assert script.stat().st_mode & 0o777 == 0o700
    assert not (agent_root / "ran").exists()


def test_network_config_parsing(busybox: str, agent_root: Path) -> None:
    from site_agent.context.cidata import NetworkConfig, render_network_config

    network = NetworkConfig(
        mac="52:54:00:AB:CD:EF",
        address="198.18.1.7",
        prefix=23,
        gateway="198.18.0.1",
        dns=("198.18.0.1", "198.18.0.2"),
    )
    (agent_root / "run/stratus/cidata/network-config").write_text(render_network_config(network))
    # Stop right after parsing: replace the interface lookup with a report.
    script = 'iface_by_mac() { echo "MAC=$1" >&2; return 1; }\napply_network\n'

    result = run_agent(busybox, agent_root, script)

    assert "MAC=52:54:00:ab:cd:ef" in result.stderr.decode()
    assert "no interface with MAC 52:54:00:ab:cd:ef" in result.stdout.decode()
