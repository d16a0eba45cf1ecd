"""Boot the built guest under real QEMU (TCG, no libvirt) with a cidata seed and check it.

The console protocol (``docs/guest-image.md``) is what the site agent relies
on: ``STRATUS-READY``, ``STRATUS-USERDATA``, ``STRATUS-BLOCK``,
``STRATUS-SHUTDOWN``. Boot times (launch -> READY) are printed (``-s``) and
attached to the test report as the ``boot_seconds`` property.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from site_agent.context import ContextSeed, NetworkConfig, write_cidata_iso
from tests.site_agent.guest.qemu_guest import QemuGuest


def _ssh_public_key(comment: str) -> str:
    public = Ed25519PrivateKey.generate().public_key()
    openssh = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{openssh} {comment}"


SSH_KEY = _ssh_public_key("alice@test")
SSH_KEY_2 = _ssh_public_key("bob@test")
MAC = "52:54:00:5e:00:2a"
ADDRESS = "198.18.0.42"

# Context values that would run commands if the guest quoted them badly.
HOSTILE_CONTEXT = {
    "SUBST": "$(touch /tmp/pwned-subst)",
    "BACKTICK": "`touch /tmp/pwned-backtick`",
    "BREAKOUT": "'; touch /tmp/pwned-breakout; echo '",
    "DOUBLED": "it''s \"quoted\" \\ back\\slash $HOME ${PATH} !x * ?",
    "YAMLISH": "a: b # not a comment - [x] {y} &anchor *alias |",
    "EMPTY": "",
    "SPACES": "  padded  ",
    "UNICODE": "héllo wörld ✓",
}

BootGuest = Callable[..., QemuGuest]


def _ready_pattern(instance_id: str, ip: str) -> str:
    return rf"^STRATUS-READY {re.escape(instance_id)} {re.escape(ip)}$"


def _report_boot(record_property: Callable[[str, object], None], name: str, seconds: float) -> None:
    record_property("boot_seconds", round(seconds, 2))
    print(f"\n{name}: launch -> STRATUS-READY in {seconds:.2f} s (TCG)")


def _context_script() -> str:
    lines = [
        "#!/bin/sh",
        "echo USERDATA-MARKER-7f3a",
        'echo "HOSTNAME=<$(hostname)>"',
        "sed 's/^/CTXFILE /' /etc/stratus/context",
        ". /etc/stratus/context",
    ]
    lines += [f"printf 'CTX {key}=<%s>\\n' \"${key}\"" for key in HOSTILE_CONTEXT]
    lines += [
        "ls /tmp/pwned-* >/dev/null 2>&1 && echo PWNED-FILES-EXIST || echo NO-PWNED-FILES",
        "sed 's/^/AUTHKEY /' /root/.ssh/authorized_keys",
        "ip -4 -o addr show | sed 's/^/ADDR /'",
        "ip route | sed 's/^/ROUTE /'",
        "sed 's/^/RESOLV /' /etc/resolv.conf",
        "exit 7",
    ]
    return "\n".join(lines) + "\n"


def test_boot_applies_seed_network_and_runs_user_script(
    boot_guest: BootGuest, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    instance_id = str(uuid.uuid4())
    seed = ContextSeed(
        instance_id=instance_id,
        hostname="web-1",
        ssh_keys=(SSH_KEY,),
        context=HOSTILE_CONTEXT,
        network=NetworkConfig(
            mac=MAC, address=ADDRESS, prefix=24, gateway="198.18.0.1", dns=("198.18.0.1",)
        ),
        user_data=_context_script(),
    )
    iso = tmp_path / "seed.iso"
    write_cidata_iso(seed, iso)

    guest = boot_guest(seed=iso, mac=MAC)
    _, boot_seconds = guest.wait_for(_ready_pattern(instance_id, ADDRESS))
    _report_boot(record_property, "with network", boot_seconds)
    guest.wait_for(rf"^STRATUS-USERDATA {instance_id} exit 7$")
    lines = guest.lines

    assert sum("STRATUS-READY" in line for line in lines) == 1
    assert "USERDATA-MARKER-7f3a" in lines
    assert "HOSTNAME=<web-1>" in lines
    # Every hostile value survives the trip verbatim and ran nothing.
    for key, value in HOSTILE_CONTEXT.items():
        assert f"CTX {key}=<{value}>" in lines, key
    assert "NO-PWNED-FILES" in lines
    assert "PWNED-FILES-EXIST" not in lines
    assert sum(line.startswith("CTXFILE ") for line in lines) == len(HOSTILE_CONTEXT)
    assert f"AUTHKEY {SSH_KEY}" in lines
    assert any(re.search(rf"^ADDR .*inet {ADDRESS}/24 ", line) for line in lines)
    assert "ROUTE default via 198.18.0.1 dev eth0 " in lines
    assert "RESOLV nameserver 198.18.0.1" in lines
    # The script ran after READY, so READY came first on the console.
    assert lines.index("USERDATA-MARKER-7f3a") > next(
        i for i, line in enumerate(lines) if line.startswith("STRATUS-READY")
    )


def test_boot_without_network_reports_none_and_reads_cloud_config(
    boot_guest: BootGuest, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    instance_id = str(uuid.uuid4())
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {SSH_KEY_2}\n"
    seed = ContextSeed(
        instance_id=instance_id, hostname="db-2", ssh_keys=(SSH_KEY,), user_data=user_data
    )
    iso = tmp_path / "seed.iso"
    write_cidata_iso(seed, iso)

    guest = boot_guest(seed=iso)  # -nic none
    _, boot_seconds = guest.wait_for(_ready_pattern(instance_id, "none"))
    _report_boot(record_property, "without network", boot_seconds)
    assert "stratus-agent: installed 2 ssh key(s)" in guest.lines
    assert not any(line.startswith("STRATUS-USERDATA") for line in guest.lines)


def test_block_hotplug_is_reported(boot_guest: BootGuest, tmp_path: Path) -> None:
    instance_id = str(uuid.uuid4())
    iso = tmp_path / "seed.iso"
    write_cidata_iso(ContextSeed(instance_id=instance_id, hostname="hp"), iso)
    extra = tmp_path / "extra.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(extra), "8M"], check=True)

    guest = boot_guest(seed=iso)
    guest.wait_for(_ready_pattern(instance_id, "none"))
    # vda = root disk, vdb = cidata; the hot-plugged disk becomes vdc.
    guest.qmp(
        "blockdev-add",
        **{"driver": "raw", "node-name": "hp1", "file": {"driver": "file", "filename": str(extra)}},
    )
    plugged = time.monotonic() - guest.started
    guest.qmp("device_add", driver="virtio-blk-pci", id="hpdisk1", drive="hp1")
    _, added = guest.wait_for(r"^STRATUS-BLOCK add vdc$", timeout=30)
    unplugged = time.monotonic() - guest.started
    guest.qmp("device_del", id="hpdisk1")
    _, removed = guest.wait_for(r"^STRATUS-BLOCK remove vdc$", timeout=30)
    print(f"\nhot-plug seen in {added - plugged:.2f} s, unplug in {removed - unplugged:.2f} s")
    assert removed > added
    assert [line for line in guest.lines if line.startswith("STRATUS-BLOCK")] == [
        "STRATUS-BLOCK add vdc",
        "STRATUS-BLOCK remove vdc",
    ]


def test_power_button_shuts_down_cleanly(boot_guest: BootGuest, tmp_path: Path) -> None:
    instance_id = str(uuid.uuid4())
    iso = tmp_path / "seed.iso"
    write_cidata_iso(ContextSeed(instance_id=instance_id, hostname="off"), iso)

    guest = boot_guest(seed=iso)
    guest.wait_for(_ready_pattern(instance_id, "none"))
    pressed = time.monotonic() - guest.started
    guest.qmp("system_powerdown")  # what libvirt's virDomainShutdown does
    _, announced = guest.wait_for(rf"^STRATUS-SHUTDOWN {instance_id}$", timeout=15)
    assert guest.wait_exit(timeout=15) == 0  # QEMU exits when the guest powers off
    off = time.monotonic() - guest.started
    # The console reader thread may still be draining the pipe when QEMU has exited:
    # wait for the kernel's last line rather than reading the lines once.
    guest.wait_for(r"reboot: Power down", timeout=15)
    print(f"\npower button -> SHUTDOWN line {announced - pressed:.2f} s, off {off - pressed:.2f} s")


def test_boot_without_seed_reports_none(boot_guest: BootGuest) -> None:
    guest = boot_guest(seed=None)
    guest.wait_for(r"^STRATUS-READY none none$", timeout=60)
    assert "stratus-agent: no cidata volume found" in guest.lines
