"""Volumes through the broker: made at one site as the user, every operation forwarded.

The site records the real owner (the broker acts for the user, see
:meth:`broker.runtime.Runtime.acting`); the broker keeps its own record of
every volume (broker id, site, the site's id, owner, the last shape the
site showed) and checks it on every request: another user's volume answers
``404`` like one that does not exist; admins see every owner's with
``?all=true``.

* ``POST /volumes`` goes to ``site`` when given; otherwise to the site of
  ``cow_of``; otherwise to the cheapest available site (then by name) whose
  heartbeat offers ``image`` when one is given. The record and the
  ``Idempotency-Key`` (:mod:`core.idempotency`, scope ``volumes``) are
  stored first; the site then gets the broker's volume id as its
  ``Idempotency-Key``. A repeated request (even one racing the first)
  returns the same volume: if the site's answer is not in yet it sends the
  same create again, which the site answers with the same volume.
* ``GET /volumes`` asks every site holding volumes of the caller at once,
  each within ``list_timeout_seconds``; a site that is unavailable or does
  not answer makes the listing ``partial`` with a warning, and its volumes
  are shown as last seen in state ``unknown``.
* Attach and detach take the broker's VM id; the VM must be on the
  volume's site (``409 invalid_operation`` otherwise). Answers carry broker
  ids (volume, VM, ``cow_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import Any

from auth.principal import Principal
from broker.errors import InvalidOperation, NowhereToPlace, VmNotFound, VolumeNotFound
from broker.runtime import Runtime, db
from broker.vms.store import VmRef
from broker.volumes.models import (
    BrokerVmDisk,
    BrokerVolume,
    BrokerVolumeCreate,
    BrokerVolumeDeleted,
    BrokerVolumeList,
    BrokerVolumePublic,
)
from core.idempotency import request_hash
from core.resources.volumes import (
    VmDisk,
    VolumeAttach,
    VolumeCreate,
    VolumeDetach,
    VolumeListQuery,
    VolumePublic,
    VolumeUpdate,
)
from federation.errors import ProviderError, ProviderNotFound
from federation.providers.base import ComputeProvider

#: (record, the site's shape as JSON, why it is unknown or None)
_Seen = tuple[BrokerVolume, dict[str, Any], str | None]


class VolumeService:
    """The broker's ``/volumes`` (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.store = rt.volumes

    async def _row(self, principal: Principal, volume_id: str) -> BrokerVolume:
        row = await db(self.store.get, volume_id)
        if row is None or not principal.can_access(row.owner):
            raise VolumeNotFound(f"no volume with id {volume_id!r}")
        return row

    def _acting(self, principal: Principal, row: BrokerVolume, what: str) -> ComputeProvider:
        provider = self.rt.registry.usable(row.site, f"{what} volume {row.id}")
        return self.rt.acting(provider, principal, row.owner)

    # --- placement ----------------------------------------------------------------

    def choose_site(self, body: BrokerVolumeCreate, origin: BrokerVolume | None) -> str:
        """Where a new volume goes (see the module docstring); 404/409 when nowhere."""
        registry = self.rt.registry
        if body.site is not None:
            registry.check_site(body.site, what=" (volumes live at sites, not public clouds)")
            if origin is not None and origin.site != body.site:
                raise InvalidOperation(
                    f"volume {origin.id} is on site {origin.site}: a copy-on-write of it "
                    f"can only be made there, not on {body.site}"
                )
            return body.site
        if origin is not None:
            return origin.site
        reasons: dict[str, str] = {}
        candidates: list[tuple[float, str]] = []
        for name in registry.site_names():
            available, reason = registry.status(name)
            report = registry.report(name)
            if not available or report is None:
                reasons[name] = reason or "unavailable"
                continue
            offered = set(report.cached_images) | set(report.fetchable_images or ())
            fetches_any = report.fetchable_images is None
            if body.image is not None and not fetches_any and body.image not in offered:
                reasons[name] = f"does not offer image {body.image}"
                continue
            candidates.append((report.price_per_hour, name))
        if not candidates:
            raise NowhereToPlace(
                "no available site can take this volume", details={"sites": reasons}
            )
        return min(candidates)[1]

    # --- views --------------------------------------------------------------------

    def _views(self, principal: Principal, seen: list[_Seen]) -> list[BrokerVolumePublic]:
        """Site shapes as the broker shows them: broker ids, owner, site; ``unknown`` state
        (with the reason) for a volume whose site did not answer. Runs in a thread."""
        by_site: dict[str, tuple[set[str], set[str]]] = {}
        for row, shape, _ in seen:
            vm_ids, volume_ids = by_site.setdefault(row.site, (set(), set()))
            vm_ids.update(str(a.get("vm_id")) for a in shape.get("attachments") or [])
            if shape.get("cow_of"):
                volume_ids.add(str(shape["cow_of"]))
        vms: dict[str, dict[str, VmRef]] = {
            site: self.rt.vms.refs_at(site, ids[0]) for site, ids in by_site.items()
        }
        volumes = {site: self.store.broker_ids(site, ids[1]) for site, ids in by_site.items()}
        views = []
        for row, shape, unknown in seen:
            attachments = []
            for attachment in shape.get("attachments") or []:
                vm = vms[row.site].get(str(attachment.get("vm_id")))
                if vm is not None and principal.can_access(vm.owner, vm.group):
                    attachments.append({**attachment, "vm_id": vm.id})
            cow_of = shape.get("cow_of")
            data = {
                **shape,
                "id": row.id,
                "owner": row.owner,
                "site": row.site,
                "site_volume_id": row.site_volume_id,
                "cow_of": volumes[row.site].get(cow_of, cow_of) if cow_of else None,
                "attachments": attachments,
            }
            if unknown is not None:
                data["state"] = "unknown"
                data["state_reason"] = unknown
            views.append(BrokerVolumePublic.model_validate(data))
        return views

    async def _view(
        self, principal: Principal, row: BrokerVolume, volume: VolumePublic
    ) -> BrokerVolumePublic:
        shape = volume.model_dump(mode="json")
        await db(self.store.save_last, {row.id: shape})
        views = await db(self._views, principal, [(row, shape, None)])
        return views[0]

    async def _disk(self, row: BrokerVolume, disk: VmDisk) -> BrokerVmDisk:
        vms = await db(self.rt.vms.refs_at, row.site, [disk.vm_id])
        vm = vms.get(disk.vm_id)
        data = disk.model_dump()
        data.update(vm_id=vm.id if vm else disk.vm_id, volume_id=row.id, site=row.site)
        return BrokerVmDisk.model_validate(data)

    # --- create -------------------------------------------------------------------

    async def create(
        self, principal: Principal, body: BrokerVolumeCreate, key: str | None
    ) -> BrokerVolumePublic:
        """Create the volume at its site as the caller (see the module docstring)."""
        owner = principal.account
        digest = request_hash(body.model_dump(mode="json"))
        if key is not None:
            earlier = await db(self.store.earlier, owner, key, digest)
            if earlier is not None:
                return await self._made(principal, earlier)
        origin = await self._row(principal, body.cow_of) if body.cow_of else None
        if origin is not None and origin.site_volume_id is None:
            raise InvalidOperation(f"volume {origin.id} is still being created")
        site = self.choose_site(body, origin)
        self.rt.registry.usable(site, f"create a volume at site {site}")
        fields = body.model_dump(mode="json", exclude={"site"}, exclude_none=True)
        if origin is not None:
            fields["cow_of"] = origin.site_volume_id
        site_body = VolumeCreate.model_validate(fields)
        row = BrokerVolume(
            id=str(uuid.uuid4()),
            owner=owner,
            site=site,
            spec=site_body.model_dump(mode="json", exclude_none=True),
        )
        won = await db(self.store.reserve, row, key=key, digest=digest)
        if won is not None:  # a concurrent twin with the same key stored first
            return await self._made(principal, won)
        try:
            return await self._send(principal, row)
        except BaseException:
            await db(self.store.forget, row.id, owner, key)
            raise

    async def _send(self, principal: Principal, row: BrokerVolume) -> BrokerVolumePublic:
        """Send the stored create to the site (its key: the broker's volume id)."""
        provider = self._acting(principal, row, "create")
        body = VolumeCreate.model_validate(row.spec)
        volume = await provider.create_volume(body, idempotency_key=row.id)
        try:
            row = await db(self.store.made, row.id, volume.id, volume.model_dump(mode="json"))
        except KeyError:
            raise InvalidOperation(
                "the first request with this Idempotency-Key failed; send it again"
            ) from None
        return await self._view(principal, row, volume)

    async def _made(self, principal: Principal, volume_id: str) -> BrokerVolumePublic:
        """The volume of an earlier request with the same key (sent again if need be)."""
        row = await self._row(principal, volume_id)
        if row.site_volume_id is None:
            return await self._send(principal, row)
        return await self.get(principal, volume_id)

    # --- reading ------------------------------------------------------------------

    async def list_volumes(self, principal: Principal, query: VolumeListQuery) -> BrokerVolumeList:
        """The caller's volumes (admins with ``all``: everyone's) at every site, at once."""
        every = query.all and principal.is_admin
        owner = query.owner if every else principal.account
        rows = [r for r in await db(self.store.owned, owner) if r.site_volume_id is not None]
        by_site: dict[str, list[BrokerVolume]] = {}
        for row in rows:
            by_site.setdefault(row.site, []).append(row)
        site_query = VolumeListQuery(tag=query.tag, visibility=query.visibility, all=every)
        timeout = self.rt.list_timeout
        warnings: list[str] = []
        seen: dict[str, _Seen] = {}

        async def one(site: str, site_rows: list[BrokerVolume]) -> None:
            available, reason = self.rt.registry.status(site)
            why: str | None = None
            if not available:
                why = reason or f"site {site} is unavailable"
                warnings.append(f"{why}; its volumes are shown as last known, in state unknown")
            else:
                provider = self.rt.registry.provider(site)
                acting = provider.acting_for(None if every else self.rt.user(principal))
                try:
                    async with asyncio.timeout(timeout):
                        live = {v.id: v for v in await acting.list_volumes(site_query)}
                except (ProviderError, TimeoutError) as exc:
                    detail = exc.reason if isinstance(exc, ProviderError) else None
                    detail = detail or f"no answer within {timeout:g}s"
                    why = f"site {site} did not answer: {detail}"
                    warnings.append(f"site {site} did not answer ({detail}); listing is partial")
                else:
                    for row in site_rows:
                        found = live.get(row.site_volume_id or "")
                        if found is not None:
                            seen[row.id] = (row, found.model_dump(mode="json"), None)
                    return
            for row in site_rows:
                if _matches(row.last, query):
                    seen[row.id] = (row, row.last, why)

        await asyncio.gather(*(one(site, site_rows) for site, site_rows in by_site.items()))
        fresh = {vid: shape for vid, (_, shape, why) in seen.items() if why is None}
        if fresh:
            await db(self.store.save_last, fresh)
        ordered = [seen[row.id] for row in rows if row.id in seen]
        views = await db(self._views, principal, ordered)
        return BrokerVolumeList(volumes=views, partial=bool(warnings), warnings=sorted(warnings))

    async def get(
        self, principal: Principal, volume_id: str, *, wait: bool = False, timeout: float = 60.0
    ) -> BrokerVolumePublic:
        """One volume, asked of its site (``wait``: until an image copy is finished)."""
        row = await self._row(principal, volume_id)
        if row.site_volume_id is None:
            return await self._send(principal, row)
        provider = self._acting(principal, row, "show")
        volume = await provider.get_volume(
            row.site_volume_id, wait="ready" if wait else None, timeout=timeout
        )
        return await self._view(principal, row, volume)

    # --- changes ------------------------------------------------------------------

    async def update(
        self, principal: Principal, volume_id: str, body: VolumeUpdate
    ) -> BrokerVolumePublic:
        row = await self._placed(principal, volume_id)
        assert row.site_volume_id is not None
        volume = await self._acting(principal, row, "change").update_volume(
            row.site_volume_id, body
        )
        return await self._view(principal, row, volume)

    async def delete(self, principal: Principal, volume_id: str) -> BrokerVolumeDeleted:
        """Delete at the site, then forget it; a volume the site no longer has is forgotten."""
        row = await self._row(principal, volume_id)
        provider = self._acting(principal, row, "delete")
        if row.site_volume_id is not None:
            with contextlib.suppress(ProviderNotFound):
                await provider.delete_volume(row.site_volume_id)
        await db(self.store.remove, row.id)
        return BrokerVolumeDeleted(id=row.id, deleted=True, site=row.site)

    async def _placed(self, principal: Principal, volume_id: str) -> BrokerVolume:
        row = await self._row(principal, volume_id)
        if row.site_volume_id is None:
            raise InvalidOperation(f"volume {volume_id} is still being created")
        return row

    async def _vm_on_site(self, principal: Principal, row: BrokerVolume, vm_id: str) -> str:
        """The site's id of the caller's VM ``vm_id``, which must be on the volume's site."""
        vm = await db(self.rt.vms.ref, vm_id)
        if vm is None or not principal.can_access(vm.owner, vm.group):
            raise VmNotFound(f"no VM with id {vm_id!r}")
        if vm.site != row.site or vm.site_vm_id is None:
            where = f"on {vm.site}" if vm.site else "not placed on any site"
            raise InvalidOperation(
                f"volume {row.id} is on site {row.site} and VM {vm_id} is {where}: a volume "
                f"can only be attached to a VM of its own site"
            )
        return vm.site_vm_id

    async def attach(
        self, principal: Principal, volume_id: str, body: VolumeAttach
    ) -> BrokerVmDisk:
        """Hot-plug into the caller's VM on the same site; the answer names the device."""
        row = await self._placed(principal, volume_id)
        assert row.site_volume_id is not None
        site_vm = await self._vm_on_site(principal, row, body.vm_id)
        disk = await self._acting(principal, row, "attach").attach_volume(
            row.site_volume_id, VolumeAttach(vm_id=site_vm, readonly=body.readonly)
        )
        return await self._disk(row, disk)

    async def detach(
        self, principal: Principal, volume_id: str, body: VolumeDetach
    ) -> BrokerVmDisk:
        """Hot-unplug from ``vm_id`` (or from the one VM that has it)."""
        row = await self._placed(principal, volume_id)
        assert row.site_volume_id is not None
        site_vm = None
        if body.vm_id is not None:
            site_vm = await self._vm_on_site(principal, row, body.vm_id)
        disk = await self._acting(principal, row, "detach").detach_volume(
            row.site_volume_id, VolumeDetach(vm_id=site_vm)
        )
        return await self._disk(row, disk)


def _matches(shape: dict[str, Any], query: VolumeListQuery) -> bool:
    """Whether a last-known shape passes the listing's filters (sites filter live ones)."""
    if query.visibility is not None and shape.get("visibility") != query.visibility:
        return False
    return query.tag is None or re.search(query.tag, str(shape.get("tag", ""))) is not None
