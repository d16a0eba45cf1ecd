"""The one VM state vocabulary of Stratus, and which states each side reports.

States follow the OpenNebula model users know::

    queued -> pending -> prolog -> boot -> running -> shutdown -> done
                \\          \\        \\        \\            \\
                 +----------+--------+--------+------------+--> failed
    queued -> expired

* a **site** reports ``pending``, ``prolog``, ``boot``, ``running``,
  ``shutdown``, ``done`` and ``failed`` (:data:`SITE_STATES`; its state
  machine is ``site_agent.vms.states``);
* the **broker** adds its own (:data:`BROKER_STATES`): ``queued`` (waiting in
  the deferred queue), ``expired`` (its queue deadline passed) and
  ``unknown`` (its site is unavailable or did not answer: the last known
  values are shown, nothing is deleted);
* a **public cloud** maps its node states (EC2's and libcloud's) onto
  ``pending``, ``boot`` (starting, rebooting), ``running``, ``shutdown``
  (stopping, shutting down), ``stopped``, ``suspended``, ``done``,
  ``failed`` (error) and ``unknown``; the table is
  ``federation.providers.ec2.CLOUD_STATE_MAP``.

Every other module imports :class:`VmState` from here; mapping a backend's
state names goes through an explicit table, and anything unmapped is
``unknown`` (:func:`parse_state`).
"""

from __future__ import annotations

from enum import StrEnum


class VmState(StrEnum):
    """A VM's state, wherever it runs (see the module docstring for who reports which)."""

    QUEUED = "queued"
    PENDING = "pending"
    PROLOG = "prolog"
    BOOT = "boot"
    RUNNING = "running"
    SHUTDOWN = "shutdown"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """The VM does not run and never will again: ``done``, ``failed`` or ``expired``.

        A terminal VM holds no CPU or memory. A ``failed`` one may still hold
        a disk or an address until it is killed (which makes it ``done``).
        """
        return self in TERMINAL_STATES

    @property
    def is_final(self) -> bool:
        """Nothing about the VM will change any more: ``done`` or ``expired``."""
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """Not terminal: the VM is waiting, being made, running or stopping."""
        return self not in TERMINAL_STATES


TERMINAL_STATES = frozenset({VmState.DONE, VmState.FAILED, VmState.EXPIRED})
FINAL_STATES = frozenset({VmState.DONE, VmState.EXPIRED})

#: The states a site agent reports (the site's state machine moves between these).
SITE_STATES = frozenset(
    {
        VmState.PENDING,
        VmState.PROLOG,
        VmState.BOOT,
        VmState.RUNNING,
        VmState.SHUTDOWN,
        VmState.DONE,
        VmState.FAILED,
    }
)

#: The states only the broker gives a VM (on top of what sites and clouds report).
BROKER_STATES = frozenset({VmState.QUEUED, VmState.EXPIRED, VmState.UNKNOWN})

#: A site's state names -> :class:`VmState` (sites speak the same vocabulary).
SITE_STATE_MAP: dict[str, VmState] = {state.value: state for state in SITE_STATES}


def parse_state(value: object, table: dict[str, VmState] | None = None) -> VmState:
    """The :class:`VmState` for a backend's state name; anything unmapped is ``unknown``.

    ``table`` is the backend's mapping (default: every state's own name).
    """
    text = str(value).lower()
    if table is not None:
        return table.get(text, VmState.UNKNOWN)
    try:
        return VmState(text)
    except ValueError:
        return VmState.UNKNOWN
