"""Thin async wrapper around the ``qemu-img`` tool.

Errors: ``QemuImgError`` carries qemu-img's own message (one line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from site_agent.errors import SiteAgentError


class QemuImgError(SiteAgentError):
    """qemu-img failed; the message is its stderr."""


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        # A cancelled create must not leave qemu-img running or its pipes open.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.communicate()
        raise
    if proc.returncode != 0:
        raise QemuImgError(err.decode(errors="replace").strip() or f"qemu-img {args[0]} failed")
    return out.decode()


async def create_overlay(
    base: Path, base_format: str, dest: Path, size_bytes: int | None = None
) -> None:
    """Create ``dest`` as a qcow2 copy-on-write overlay on ``base``.

    The overlay starts empty whatever the base's size, so creating it takes
    the same time for a 40 MiB or a 4 GiB image. ``size_bytes`` grows the
    virtual disk beyond the base's size.
    """
    args = ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base.resolve()), str(dest)]
    if size_bytes is not None:
        args.append(str(size_bytes))
    await _run(*args)


async def create_blank(dest: Path, size_bytes: int, fmt: str = "qcow2") -> None:
    """Create an empty disk image of ``size_bytes`` (sparse)."""
    await _run("create", "-q", "-f", fmt, str(dest), str(size_bytes))


async def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``path``; with ``fmt`` the format is not probed."""
    args = ["info", "--output=json", "-U"]
    if fmt is not None:
        args += ["-f", fmt]
    result: dict[str, Any] = json.loads(await _run(*args, str(path)))
    return result


async def convert(source: Path, dest: Path, fmt: str = "qcow2") -> None:
    """Write ``source`` and its whole backing chain into ``dest``, a standalone ``fmt`` image.

    Used to flatten a VM's overlay into a new image (save as image); the
    source must not be in use by a running guest.
    """
    await _run("convert", "-q", "-O", fmt, str(source), str(dest))


async def copy_image(
    source: Path, source_format: str, dest: Path, dest_format: str = "qcow2"
) -> None:
    """Copy ``source`` (read as ``source_format``, never probed) into a standalone ``dest``."""
    await _run("convert", "-q", "-f", source_format, "-O", dest_format, str(source), str(dest))


async def resize(path: Path, size_bytes: int) -> None:
    """Grow the virtual disk ``path`` to ``size_bytes`` (never used to shrink)."""
    await _run("resize", "-q", str(path), str(size_bytes))
