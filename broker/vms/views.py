"""A VM record as the API shows it (:class:`~broker.vms.models.BrokerVmPublic`)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.sites.models import ProviderKind
from broker.vms.models import BrokerVm, BrokerVmPublic
from core.vm_state import VmState, parse_state
from federation.queue import DeferredQueue


def public(
    row: BrokerVm, queue: DeferredQueue, *, unknown_reason: str | None = None
) -> BrokerVmPublic:
    """``row`` as users see it.

    ``unknown_reason``: the VM's provider is unavailable or did not answer; a
    VM that is not final is shown ``unknown`` with that reason (its last known
    fields are kept). A queued VM gets its place in the queue and deadline.
    """
    state = parse_state(row.state)
    reason = row.state_reason
    if unknown_reason is not None and not state.is_final:
        state = VmState.UNKNOWN
        reason = unknown_reason
    position = None
    deadline = None
    if state is VmState.QUEUED and row.id in queue:
        position = queue.position(row.id)
        item = queue.get(row.id)
        if item.deadline is not None:
            deadline = datetime.fromtimestamp(item.deadline, UTC)
    return BrokerVmPublic(
        id=row.id,
        name=row.name,
        owner=row.owner,
        group=row.group,
        image=row.image,
        vcpus=row.vcpus,
        memory_mib=row.memory_mib,
        instance_type=row.instance_type,
        state=state,
        state_reason=reason,
        host=row.host,
        ready=row.ready and state is VmState.RUNNING,
        ip=row.ip,
        network=row.network,
        address=row.address,
        mac=row.mac,
        via=row.via,
        created_at=row.created_at,
        updated_at=row.updated_at,
        site=row.site,
        kind=ProviderKind(row.kind) if row.kind else None,
        site_vm_id=row.site_vm_id,
        addresses=list(row.addresses),
        price_per_hour=row.price_per_hour,
        queue_position=position,
        deadline=deadline,
    )
