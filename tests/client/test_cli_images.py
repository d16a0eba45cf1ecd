"""``stratus image ...``, ``vm stop --save`` and ``vm kill --force`` against a running agent.

The agent (``stratus serve site``, fake hypervisor hosts) downloads the
registered image from a small HTTP server on 127.0.0.1 run by the test.
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from client.cli.main import main
from tests.client.conftest import RunningSite


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A directory served over HTTP on 127.0.0.1 (ephemeral port); yields (base URL, dir)."""
    root = tmp_path_factory.mktemp("served")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(root / "deb.qcow2"), "32M"], check=True
    )
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_image_commands_and_save_as_image(
    fake_site: RunningSite, served: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, root = served
    user = ["--url", fake_site.url, "--token", fake_site.token]
    admin = ["--url", fake_site.url, "--token", fake_site.admin_token]

    code, out, err = run(capsys, "-o", "json", "image", "digest", str(root / "deb.qcow2"))
    assert code == 0, err
    digest = json.loads(out)
    assert digest["size"] == (root / "deb.qcow2").stat().st_size
    assert len(digest["sha1"]) == 40 and len(digest["sha256"]) == 64

    code, out, err = run(
        capsys,
        *user,
        "-o",
        "json",
        "image",
        "register",
        "deb",
        f"{base_url}/deb.qcow2",
        "--size",
        str(digest["size"]),
        "--sha256",
        digest["sha256"],
        "--description",
        "from the CLI",
    )
    assert code == 0, err
    registered = json.loads(out)
    assert (registered["name"], registered["state"], registered["owner"]) == (
        "deb",
        "pending",
        "carol",
    )

    # file:// is for site admins; checksums are required.
    local = f"file://{root / 'deb.qcow2'}"
    code, _, err = run(
        capsys, *user, "image", "register", "x", local, "--size", "1", "--sha256", "a" * 64
    )
    assert code == 1 and "site admins" in err and "HTTP 403" in err
    code, _, err = run(capsys, *user, "image", "register", "x", local, "--size", "1")
    assert code == 2 and "--sha256" in err
    code, _, err = run(
        capsys,
        *admin,
        "image",
        "register",
        "local-deb",
        local,
        "--size",
        str(digest["size"]),
        "--sha1",
        digest["sha1"],
        "--public",
    )
    assert code == 0, err

    code, out, err = run(capsys, *user, "-o", "json", "vm", "run", "deb", "--wait", "ready")
    assert code == 0, err
    [vm] = json.loads(out)
    assert vm["state"] == "running" and vm["ready"]

    code, out, _ = run(capsys, *user, "image", "list")
    header, *rows = out.strip().splitlines()
    assert header.split() == ["NAME", "STATE", "FORMAT", "SOURCE", "OWNER", "SIZE", "LAST_USED_AT"]
    by_name = {r.split()[0]: r.split() for r in rows}
    assert set(by_name) == {"deb", "local-deb", "tiny"}
    assert by_name["deb"][1:4] == ["ready", "qcow2", "url"]
    assert by_name["local-deb"][1] == "pending"

    code, out, _ = run(capsys, *user, "-o", "json", "image", "show", "deb")
    shown = json.loads(out)
    assert shown["sha1"] == digest["sha1"] and shown["cached_bytes"] == digest["size"]

    code, _, err = run(capsys, *user, "image", "delete", "deb")
    assert code == 1 and "image_in_use" in err

    code, _, err = run(capsys, *user, "vm", "stop", vm["id"], vm["id"], "--save", "two")
    assert code == 2 and "--save takes exactly one VM" in err
    code, out, err = run(capsys, *user, "vm", "stop", vm["id"], "--save", "deb-saved")
    assert code == 0, err
    assert "done" in out and "saved as image deb-saved" in err
    code, out, _ = run(capsys, *user, "-o", "json", "image", "show", "deb-saved")
    saved = json.loads(out)
    assert saved["state"] == "ready" and saved["source"] == "saved" and saved["base_image"] == "deb"
    code, out, _ = run(capsys, *user, "vm", "events", vm["id"])
    assert "root disk saved as image 'deb-saved'" in out

    code, out, err = run(capsys, *user, "-o", "json", "vm", "run", "deb-saved", "--wait", "ready")
    assert code == 0, err
    [again] = json.loads(out)
    code, out, err = run(capsys, *user, "-o", "json", "vm", "kill", "--force", again["id"])
    assert code == 0, err
    assert json.loads(out)[0]["state"] == "done"

    code, out, err = run(capsys, *user, "-o", "json", "image", "delete", "deb", "deb-saved")
    assert code == 0, err
    assert [d["name"] for d in json.loads(out)] == ["deb", "deb-saved"]
    code, _, err = run(capsys, *user, "image", "show", "deb")
    assert code == 1 and "not_found" in err
