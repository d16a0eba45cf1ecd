"""What the broker's services share: config, registry, placer, policy, stores, the queue.

One :class:`Runtime` is made by :class:`broker.service.Broker` at start-up and
handed to every service (``broker.vms``, ``broker.volumes``,
``broker.networks``, ``broker.images``, ``broker.sites``).

Who the broker acts as at a provider (:meth:`Runtime.acting`): for a call
made for a user on their own resource, the user themselves
(``provider.acting_for(DelegatedUser.of(principal, broker=<name>))``: the
site records and authorises the real person). When the broker's own
records allowed the caller on someone else's resource because the caller
is a broker admin, and for the broker's background work (the orphan sweep),
it acts as the federation (``acting_for(None)``: its own account at the
site). A member of a VM's group acts as themselves: the site knows the group
and authorises the member on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auth.delegation import DelegatedUser
from auth.principal import Principal
from broker.config import BrokerConfig
from broker.sites.registry import SiteRegistry
from broker.sites.store import SiteStore
from broker.vms.store import VmStore
from broker.volumes.store import VolumeStore
from federation.bursting import BurstPolicy
from federation.placement import Placer
from federation.providers.base import ComputeProvider
from federation.queue import DeferredQueue

T = TypeVar("T")


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous store function in a thread (never on the event loop)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@dataclass
class Runtime:
    """The broker's shared state (see the module docstring)."""

    config: BrokerConfig
    registry: SiteRegistry
    placer: Placer
    policy: BurstPolicy
    vms: VmStore
    volumes: VolumeStore
    sites: SiteStore
    clock: Callable[[], float] = time.time
    queue: DeferredQueue = field(default_factory=DeferredQueue)
    #: Set when capacity may have freed (kill, heartbeat): the monitor looks at the queue.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        """The broker's name (``[broker] name``): what sites record as ``via``."""
        return self.config.broker.name

    def user(self, principal: Principal) -> DelegatedUser:
        """The delegated form of the authenticated caller."""
        return DelegatedUser.of(principal, broker=self.name)

    def acting(
        self,
        provider: ComputeProvider,
        principal: Principal,
        owner: str,
        group: str | None = None,
    ) -> ComputeProvider:
        """``provider`` acting for the caller on a resource of ``owner`` shared with ``group``.

        The caller's own resource, or one shared with a group the caller is in
        (the site knows the group too and authorises the member itself): as
        the caller. Anything else the broker allowed (an admin's access): as the
        federation.
        """
        if principal.account == owner or (group is not None and group in principal.groups):
            return provider.acting_for(self.user(principal))
        return provider.acting_for(None)

    @property
    def list_timeout(self) -> float:
        return self.config.broker.list_timeout_seconds
