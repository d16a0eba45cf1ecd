"""The orphan sweep: VMs and volumes made for the broker that it has no record of.

They come from creates whose answer never arrived (the broker moved on to
another site, or gave up). The sweep acts as the federation
(``provider.acting_for(None)``: at a site, the broker's own account, which
lists what was made through this broker, ``GET /vms?all=true&via=<broker>``
and the same for volumes) and removes what is older than
``orphan_grace_seconds`` and unknown to the broker's records, so a create
in flight is never mistaken for an orphan. Resources made at the site
directly, or by another broker, are never touched.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from broker.runtime import Runtime, db
from core.resources.volumes import VolumeListQuery
from federation.errors import ProviderError
from federation.providers.base import ComputeProvider, Operation

log = logging.getLogger(__name__)


class OrphanSweeper:
    """One pass of the orphan sweep over every available site and cloud."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def _old(self, created: datetime | None, now: datetime) -> bool:
        if created is None:
            return False
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return (now - created).total_seconds() >= self.rt.config.broker.orphan_grace_seconds

    async def sweep(self) -> list[str]:
        """Kill orphan VMs and delete orphan volumes; returns ``site/id`` of each removed."""
        removed: list[str] = []
        now = datetime.now(UTC)
        for name in self.rt.registry.available():
            provider = self.rt.registry.provider(name).acting_for(None)
            removed += await self._vms(name, provider, now)
            if provider.supports(Operation.VOLUMES):
                removed += await self._volumes(name, provider, now)
        return removed

    async def _vms(self, site: str, provider: ComputeProvider, now: datetime) -> list[str]:
        try:
            async with asyncio.timeout(self.rt.list_timeout):
                vms = await provider.list_vms(include_done=False)
        except (ProviderError, TimeoutError) as exc:
            log.info("orphan sweep: %s not listed: %s", site, exc or "timeout")
            return []
        known = await db(self.rt.vms.known_site_ids, site)
        killed = []
        for vm in vms:
            if vm.provider_id in known or vm.state.is_terminal or not self._old(vm.created_at, now):
                continue
            log.warning(
                "orphan sweep: killing VM %s at %s (no broker record)", vm.provider_id, site
            )
            try:
                await provider.kill_vm(vm.provider_id)
            except ProviderError as exc:
                log.info("orphan sweep: could not kill %s at %s: %s", vm.provider_id, site, exc)
                continue
            killed.append(f"{site}/{vm.provider_id}")
        return killed

    async def _volumes(self, site: str, provider: ComputeProvider, now: datetime) -> list[str]:
        try:
            async with asyncio.timeout(self.rt.list_timeout):
                volumes = await provider.list_volumes(VolumeListQuery(all=True))
        except (ProviderError, TimeoutError) as exc:
            log.info("orphan sweep: volumes of %s not listed: %s", site, exc or "timeout")
            return []
        known = await db(self.rt.volumes.known_site_ids, site)
        deleted = []
        for volume in volumes:
            ours = volume.via == self.rt.name  # never a volume made at the site directly
            if not ours or volume.id in known or not self._old(volume.created_at, now):
                continue
            log.warning(
                "orphan sweep: deleting volume %s at %s (no broker record)", volume.id, site
            )
            try:
                await provider.delete_volume(volume.id)
            except ProviderError as exc:
                log.info("orphan sweep: could not delete volume %s at %s: %s", volume.id, site, exc)
                continue
            deleted.append(f"{site}/{volume.id}")
        return deleted
