"""VM rows as the API shows them (:mod:`core.resources.vms`)."""

from __future__ import annotations

from typing import Any

from core.resources.vms import VmEventPublic, VmPublic
from core.vm_state import VmState
from site_agent.vms.models import Vm, VmEvent


def vm_public(vm: Vm, host_names: dict[str, str] | None = None) -> VmPublic:
    """The API view of ``vm``; ``host`` is the host's display name (default: its URI)."""
    data: dict[str, Any] = vm.model_dump()
    uri = data.pop("host_uri")
    data["host"] = (host_names or {}).get(uri, uri) if uri else None
    return VmPublic.model_validate(data)


def event_public(event: VmEvent) -> VmEventPublic:
    return VmEventPublic(
        at=event.at,
        from_state=VmState(event.from_state) if event.from_state else None,
        to_state=VmState(event.to_state) if event.to_state else None,
        reason=event.reason,
    )
