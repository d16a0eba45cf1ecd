"""Helpers of the public-cloud tests: a create request, and what moto really holds."""

from __future__ import annotations

import uuid
from typing import Any

from core.resources.vms import VmCreate
from federation.providers.base import VMCreateRequest
from federation.providers.ec2 import NamespaceTolerantEC2NodeDriver


def vm_request(key: str | None = None, **spec: Any) -> VMCreateRequest:
    """A create of a ``debian-12`` ``m1.small`` VM; ``spec`` overrides fields of the body."""
    vm_id = "vm-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {"image": "debian-12", "name": f"burst-{vm_id}"}
    body["instance_type"] = "m1.small"
    body.update(spec)
    return VMCreateRequest(vm_id, key or uuid.uuid4().hex, VmCreate.model_validate(body))


def moto_instances(endpoint: str) -> list[tuple[str, str, dict[str, str]]]:
    """``(id, EC2 state, tags)`` of every instance moto holds, via the fixed driver."""
    return [
        (str(n.id), n.extra["status"], n.extra["tags"]) for n in moto_driver(endpoint).list_nodes()
    ]


def moto_driver(endpoint: str) -> NamespaceTolerantEC2NodeDriver:
    """A driver straight to moto (not through the provider): to look at what it holds."""
    host, port = endpoint.removeprefix("http://").split(":")
    return NamespaceTolerantEC2NodeDriver(
        "AKIDTESTING", "testing", host=host, port=int(port), secure=False, signature_version="4"
    )
