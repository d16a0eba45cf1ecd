"""What a guest's context may hold: the rules for SSH keys, context values, user data, host names.

One set of rules, applied twice with the same functions: by the API when a
create is admitted (``core.resources.vms.VmCreate``, at a site and at the
broker) and by the site when it writes the guest's ``cidata`` seed
(``site_agent.context.cidata``). So a request accepted with 202 is never
failed later for a reason that was known at admission.

Rules (each violation raises ``ValueError`` naming the field):

* ``ssh_keys``: ``<type> <base64> [comment]`` on one line, a known key type,
  a base64 body that starts with that type (as OpenSSH writes it), no
  authorized_keys options, no control characters, at most 16 KiB each;
* ``context`` keys: ``[A-Za-z_][A-Za-z0-9_]*`` (at most 64 characters);
  values: printable text without control characters (no newline, tab, NUL,
  C1 controls, Unicode line/paragraph separators or BOM), at most 4096 bytes
  of UTF-8;
* ``user_data``: at most 16 KiB of UTF-8 (bytes, not characters);
* host names: RFC 1123.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

USER_DATA_MAX_BYTES = 16 * 1024
CONTEXT_VALUE_MAX_BYTES = 4096
CONTEXT_KEY_MAX_LEN = 64
CONTEXT_MAX_KEYS = 64
SSH_KEYS_MAX = 32
SSH_KEY_MAX_LEN = 16 * 1024

SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# C0 controls, DEL, C1 controls, Unicode line/paragraph separators, BOM
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def check_text(what: str, value: str) -> None:
    """``ValueError`` unless ``value`` is one line of printable, encodable text."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    match = _FORBIDDEN_CHARS.search(value)
    if match:
        raise ValueError(f"{what} contains a control character ({match.group()!r}); not allowed")
    utf8_size(what, value)


def utf8_size(what: str, value: str) -> int:
    """The UTF-8 size of ``value`` in bytes; ``ValueError`` for text that cannot be encoded
    (a lone surrogate such as ``"\\ud800"`` in JSON)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text: {exc.reason}") from exc


def validate_ssh_key(value: str) -> str:
    """The OpenSSH public key line ``value`` (stripped), or ``ValueError``."""
    check_text("ssh key", value)
    value = value.strip()
    if len(value) > SSH_KEY_MAX_LEN:
        raise ValueError(f"ssh key longer than {SSH_KEY_MAX_LEN} characters")
    parts = value.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(
            "ssh key must be an OpenSSH public key line '<type> <base64> [comment]' "
            f"with type one of {', '.join(sorted(SSH_KEY_TYPES))} (no authorized_keys options)"
        )
    if not _B64_RE.fullmatch(parts[1]):
        raise ValueError("ssh key body is not base64")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("ssh key body is not base64") from exc
    # The blob starts with the key type as an SSH string: uint32 length + name.
    name = parts[0].encode()
    if blob[:4] != len(name).to_bytes(4, "big") or blob[4 : 4 + len(name)] != name:
        raise ValueError(f"ssh key body does not match its type {parts[0]}")
    return " ".join(parts)


def validate_context(context: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``context`` if every key and value is acceptable, else ``ValueError``."""
    if not isinstance(context, Mapping):
        raise ValueError("context must be a mapping of strings to strings")
    if len(context) > CONTEXT_MAX_KEYS:
        raise ValueError(f"context has more than {CONTEXT_MAX_KEYS} keys")
    checked: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or len(key) > CONTEXT_KEY_MAX_LEN or not _KEY_RE.fullmatch(key):
            raise ValueError(
                f"context key {key!r} is not valid: use [A-Za-z_][A-Za-z0-9_]*, "
                f"at most {CONTEXT_KEY_MAX_LEN} characters"
            )
        check_text(f"context value for {key}", value)
        if utf8_size(f"context value for {key}", value) > CONTEXT_VALUE_MAX_BYTES:
            raise ValueError(
                f"context value for {key} is longer than {CONTEXT_VALUE_MAX_BYTES} bytes"
            )
        checked[key] = value
    return checked


def validate_user_data(value: str | None) -> str | None:
    """``value`` if it is at most 16 KiB of UTF-8 text (or None), else ``ValueError``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("user_data must be a string")
    size = utf8_size("user_data", value)
    if size > USER_DATA_MAX_BYTES:
        raise ValueError(f"user_data is {size} bytes; the limit is {USER_DATA_MAX_BYTES} (16 KiB)")
    return value


def validate_hostname(value: str) -> str:
    """``value`` if it is an RFC 1123 host name, else ``ValueError``."""
    if not isinstance(value, str) or not value or len(value) > 253:
        raise ValueError(f"hostname must be 1-253 characters, got {value!r}")
    for label in value.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"hostname {value!r} is not valid: each dot-separated label must be 1-63 "
                "letters, digits or hyphens and must not start or end with a hyphen (RFC 1123)"
            )
    return value
