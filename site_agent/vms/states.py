"""The site's VM state machine: the allowed transitions between :data:`core.vm_state.SITE_STATES`.

::

    pending -> prolog -> boot -> running -> shutdown -> done
       \\         \\        \\        \\            \\
        +---------+--------+--------+------------+--> failed

``pending``: accepted, waiting for a host. ``prolog``: disks and context
being prepared. ``boot``: the hypervisor is starting the domain.
``running``: the domain runs (the guest may still be booting: see the VM's
``ready`` flag, set by its readiness line). ``shutdown``: stopping or being
killed. ``done``: gone, resources freed (disks in quarantine). ``failed``:
could not be created, or the domain vanished; the reason is in the events.
"""

from __future__ import annotations

from core.vm_state import VmState
from site_agent.vms.errors import VmError

ALLOWED_TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    VmState.PENDING: frozenset({VmState.PROLOG, VmState.SHUTDOWN, VmState.FAILED}),
    VmState.PROLOG: frozenset({VmState.BOOT, VmState.SHUTDOWN, VmState.FAILED}),
    VmState.BOOT: frozenset({VmState.RUNNING, VmState.SHUTDOWN, VmState.FAILED}),
    VmState.RUNNING: frozenset({VmState.SHUTDOWN, VmState.FAILED}),
    VmState.SHUTDOWN: frozenset({VmState.DONE, VmState.FAILED}),
    # A failed VM still holding a disk can be killed to free it.
    VmState.FAILED: frozenset({VmState.DONE}),
    VmState.DONE: frozenset(),
}


class InvalidTransition(VmError):
    """A state change the state machine does not allow (a bug: callers check the state first)."""


def check_transition(current: VmState, target: VmState) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is allowed."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"cannot go from {current} to {target}")
