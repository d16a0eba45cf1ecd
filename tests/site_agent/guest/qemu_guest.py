"""A TCG guest under plain QEMU (no libvirt) whose serial console is read line by line.

Guests never get a path to any network: either ``-nic none`` or a virtio NIC on
a QEMU hub with no other port (``-netdev hubport``), so nothing leaves the VM.
QMP (on a unix socket in the guest's work directory) drives the power button
and PCI hot-plug.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from site_agent.guest import GuestImage


class QemuGuest:
    """One TCG guest booted from ``image``; its serial console is collected line by line."""

    def __init__(
        self,
        qemu: str,
        image: GuestImage,
        workdir: Path,
        *,
        seed: Path | None,
        mac: str | None = None,
        memory_mib: int = 256,
    ) -> None:
        self.workdir = workdir
        self.qmp_path = workdir / "qmp.sock"
        overlay = workdir / "root.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.disk),
             str(overlay)],
            check=True,
        )  # fmt: skip
        cmd = [
            qemu, "-accel", "tcg", "-nographic", "-nodefaults", "-serial", "stdio",
            "-machine", "pc", "-m", str(memory_mib), "-smp", "1", "-no-reboot",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", image.cmdline,
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        if seed is not None:
            cmd += ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"]
        if mac is None:
            cmd += ["-nic", "none"]
        else:
            # A hub with a single port: the NIC exists but is connected to nothing.
            cmd += [
                "-netdev", "hubport,id=n0,hubid=0",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
            ]  # fmt: skip
        self._lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stderr = (workdir / "qemu.stderr").open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._qmp: socket.socket | None = None
        self._qmp_buffer = b""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            with self._cond:
                self._lines.append((time.monotonic(), line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return [line for _, line in self._lines]

    @property
    def console(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> tuple[re.Match[str], float]:
        """Wait for a console line matching ``pattern``; return it and its time since launch."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for stamp, line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match, stamp - self.started
                seen = len(self._lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no console line matching {pattern!r} within {timeout} s;"
                        f" console so far:\n{self.console}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command and return its ``return`` value (events are skipped)."""
        if self._qmp is None:
            self._qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._qmp.settimeout(30)
            self._qmp.connect(str(self.qmp_path))
            self._qmp_message()  # greeting
            self._qmp_send("qmp_capabilities", {})
        return self._qmp_send(command, arguments)

    def _qmp_send(self, command: str, arguments: dict[str, Any]) -> Any:
        assert self._qmp is not None
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._qmp.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._qmp_message()
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise AssertionError(f"QMP {command} failed: {message['error']}")

    def _qmp_message(self) -> dict[str, Any]:
        assert self._qmp is not None
        while b"\n" not in self._qmp_buffer:
            chunk = self._qmp.recv(65536)
            if not chunk:
                raise AssertionError("QMP connection closed")
            self._qmp_buffer += chunk
        line, _, self._qmp_buffer = self._qmp_buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
