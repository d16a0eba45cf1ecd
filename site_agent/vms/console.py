"""Reading a VM's serial console log and spotting the guest's readiness line.

The guest prints ``STRATUS-READY <vm-id> <ip-or-none>`` on ttyS0 once its
context is applied (docs/guest-image.md).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

READY_LINE = re.compile(rb"STRATUS-READY (?P<vm>[0-9a-f-]{36}) (?P<ip>\S+)")


@dataclass(frozen=True)
class Readiness:
    ip: str | None


def read_tail(path: Path, max_bytes: int) -> tuple[str, bool]:
    """The last ``max_bytes`` of the console log and whether it was cut.

    A log that does not exist yet reads as empty.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            start = max(0, size - max_bytes)
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return "", False
    return data.decode(errors="replace"), start > 0


def find_ready(data: bytes, vm_id: str) -> Readiness | None:
    """The readiness announced in ``data`` for ``vm_id``, if any."""
    for match in READY_LINE.finditer(data):
        if match.group("vm").decode() == vm_id:
            ip = match.group("ip").decode()
            return Readiness(ip=None if ip == "none" else ip)
    return None


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def wait_for_ready(
    path: Path, vm_id: str, *, offset: int = 0, timeout: float, poll: float = 0.1
) -> Readiness | None:
    """Watch ``path`` from byte ``offset`` until the readiness line shows; None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    carry = b""
    while loop.time() < deadline:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            data = carry + chunk
            found = find_ready(data, vm_id)
            if found is not None:
                return found
            # Keep the last partial line: the readiness line may arrive in two reads.
            carry = data[data.rfind(b"\n") + 1 :][-256:]
        await asyncio.sleep(poll)
    return None
