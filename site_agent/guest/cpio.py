"""A minimal, deterministic writer for ``newc`` cpio archives (the initramfs format).

The kernel unpacks an initramfs from a (compressed) ``newc`` cpio stream. Writing
it in Python instead of calling ``cpio`` means:

* no root is needed for device nodes (``/dev/console`` is just a header entry),
* the output is byte-for-byte reproducible: every entry gets mtime 0, uid/gid 0,
  and inode numbers in insertion order; the gzip wrapper has mtime 0 too.

Entries are emitted in the order they are added; parent directories must be
added before their children (``CpioArchive.add_dir`` does not create parents).
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One archive member: a path (no leading slash), its mode and payload."""

    name: str
    mode: int  # full st_mode: file type bits | permission bits
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def _pad4(length: int) -> bytes:
    return b"\0" * ((4 - length % 4) % 4)


class CpioArchive:
    """An ordered collection of entries serialised as ``newc`` cpio."""

    def __init__(self) -> None:
        self._entries: list[CpioEntry] = []
        self._names: set[str] = set()

    def _add(self, entry: CpioEntry) -> None:
        name = entry.name.strip("/")
        if not name or name in self._names:
            raise ValueError(f"bad or duplicate cpio entry name: {entry.name!r}")
        self._names.add(name)
        self._entries.append(
            CpioEntry(name, entry.mode, entry.data, entry.rdev_major, entry.rdev_minor)
        )

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory entry."""
        self._add(CpioEntry(name, stat.S_IFDIR | perm))

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file with the given content."""
        self._add(CpioEntry(name, stat.S_IFREG | perm, data))

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link ``name -> target``."""
        self._add(CpioEntry(name, stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node (no privileges needed: it is only a header)."""
        self._add(CpioEntry(name, stat.S_IFCHR | perm, b"", major, minor))

    def __contains__(self, name: str) -> bool:
        return name.strip("/") in self._names

    def to_bytes(self) -> bytes:
        """Serialise all entries plus the trailer as an uncompressed ``newc`` stream."""
        out = io.BytesIO()
        for ino, entry in enumerate(self._entries, start=1):
            _write_entry(out, ino, entry)
        _write_entry(out, 0, CpioEntry(_TRAILER, 0))
        return out.getvalue()

    def to_gzip(self, level: int = 9) -> bytes:
        """Serialise and gzip-compress with a zero mtime (reproducible output)."""
        return gzip.compress(self.to_bytes(), compresslevel=level, mtime=0)


def _write_entry(out: io.BytesIO, ino: int, entry: CpioEntry) -> None:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime
        len(entry.data),
        0,  # dev major
        0,  # dev minor
        entry.rdev_major,
        entry.rdev_minor,
        len(name),
        0,  # check
    )
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    out.write(header)
    out.write(name)
    out.write(_pad4(len(header) + len(name)))
    out.write(entry.data)
    out.write(_pad4(len(entry.data)))
