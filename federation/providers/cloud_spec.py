"""What of a VM create body a public cloud takes, and how it gets there.

:func:`unsupported_parts` names the parts a public cloud cannot honour:
Stratus site resources (volumes, read-only volumes, static disks, an address
pool or an address, host tags) and a sharing group (the cloud knows no
users). The provider refuses a create that asks for any of them.

SSH keys, context and user data: at a site these travel in the VM's NoCloud seed (``meta-data`` and
``user-data``); on a public cloud the only channel is the instance's user
data, which cloud-init reads at first boot. :func:`cloud_user_data`:

* only ``user_data``: sent as it is;
* ``ssh_keys`` and/or ``context``: a ``#cloud-config`` document with
  ``ssh_authorized_keys`` and a ``write_files`` entry for
  ``/etc/stratus/context.json`` (the context as a JSON object, mode 0644);
  with ``user_data`` as well, both go in one MIME multipart message (the
  cloud-config part first, then the user's part as ``text/x-shellscript``
  when it starts with ``#!``, ``text/cloud-config`` when it starts with
  ``#cloud-config``, else ``text/plain`` which cloud-init types by its first
  line).

The document is JSON, which YAML (and so cloud-init) reads, so no value can
break out of its string. EC2 takes at most 16 KiB of user data:
:class:`UserDataTooLarge` beyond that.
"""

from __future__ import annotations

import json
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP

from core.resources.vms import VmCreate

#: EC2's limit on an instance's user data (before base64).
MAX_USER_DATA_BYTES = 16 * 1024
CONTEXT_PATH = "/etc/stratus/context.json"


def unsupported_parts(spec: VmCreate) -> list[str]:
    """The fields of ``spec`` a public cloud cannot honour that are set (empty: none)."""
    parts = [
        name
        for name in ("volumes", "readonly_volumes", "static_disks", "host_tags")
        if getattr(spec, name)
    ]
    parts += [name for name in ("network", "address", "group") if getattr(spec, name) is not None]
    return parts


class UserDataTooLarge(ValueError):
    """The user data the cloud would get is over :data:`MAX_USER_DATA_BYTES`."""


def _cloud_config(spec: VmCreate) -> str:
    config: dict[str, object] = {}
    if spec.ssh_keys:
        config["ssh_authorized_keys"] = list(spec.ssh_keys)
    if spec.context:
        config["write_files"] = [
            {
                "path": CONTEXT_PATH,
                "permissions": "0644",
                "content": json.dumps(spec.context, sort_keys=True) + "\n",
            }
        ]
    return "#cloud-config\n" + json.dumps(config, indent=1, sort_keys=True) + "\n"


def _subtype(user_data: str) -> str:
    if user_data.startswith("#!"):
        return "x-shellscript"
    if user_data.startswith("#cloud-config"):
        return "cloud-config"
    return "plain"


def cloud_user_data(spec: VmCreate) -> str | None:
    """The instance user data for ``spec`` (see the module docstring); None if nothing to send."""
    if not spec.ssh_keys and not spec.context:
        text = spec.user_data
    elif spec.user_data is None:
        text = _cloud_config(spec)
    else:
        message = MIMEMultipart()
        message.attach(MIMEText(_cloud_config(spec), "cloud-config", "utf-8"))
        message.attach(MIMEText(spec.user_data, _subtype(spec.user_data), "utf-8"))
        text = message.as_string(policy=SMTP.clone(linesep="\n"))
    if text is not None and len(text.encode()) > MAX_USER_DATA_BYTES:
        raise UserDataTooLarge(
            f"the instance user data would be {len(text.encode())} bytes "
            f"(SSH keys, context and user data together; the cloud takes {MAX_USER_DATA_BYTES})"
        )
    return text
