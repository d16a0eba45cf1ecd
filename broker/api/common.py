"""What every broker handler needs: the broker, and checked ids from the path."""

from __future__ import annotations

import re

from aiohttp import web

from broker.api.keys import BROKER
from broker.errors import VmNotFound, VolumeNotFound
from broker.service import Broker
from core.resources.volumes import UUID_PATTERN

_UUID = re.compile(UUID_PATTERN)


def broker(request: web.Request) -> Broker:
    return request.app[BROKER]


def vm_id(request: web.Request) -> str:
    """The ``{vm_id}`` of the path; a malformed one is a VM that does not exist (404)."""
    value = request.match_info["vm_id"]
    if not _UUID.match(value):
        raise VmNotFound(f"no VM with id {value!r}")
    return value


def volume_id(request: web.Request) -> str:
    value = request.match_info["volume_id"]
    if not _UUID.match(value):
        raise VolumeNotFound(f"no volume with id {value!r}")
    return value
