"""Volumes through the broker: created at one site, every operation forwarded to it.

A volume lives at exactly one site.  The broker creates it there as its own
account (``broker``, the per-site token), so the site cannot tell users
apart: the broker keeps its own record of every volume (``broker_volumes``:
broker id, site, the site's volume id, owner, the last shape the site
showed) and checks it on every request, exactly as it does for VMs: another
user's volume answers ``404`` like one that does not exist; admins see every
owner's with ``?all=true``.

* ``POST /volumes`` goes to ``site`` when given; otherwise to the site of
  ``cow_of``; otherwise to the cheapest available site (then by name) whose
  heartbeat offers ``image`` when one is given.  The ``Idempotency-Key`` is
  kept with the record (a retry returns the same volume, another body with
  the same key is ``409 idempotency_key_reused``) and sent on to the site,
  namespaced by owner (:func:`site_key`), where it deduplicates too: two
  racing repeats get the same site volume.
* ``GET /volumes`` asks every site holding volumes of the caller at once,
  each within ``list_timeout_seconds``; a site that is unavailable or does
  not answer makes the listing ``partial`` with a warning, and its volumes
  are shown as last seen in state ``unknown``.
* Attach and detach take the broker's VM id; the VM must be on the
  volume's site (``409 invalid_operation`` otherwise) and is translated to
  the site's VM id.  Answers carry broker ids (volume, VM, ``cow_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, delete, select

from auth.principal import Principal
from broker.errors import (
    IdempotencyKeyReused,
    InvalidOperation,
    SiteUnreachable,
    UnknownSite,
    VmNotFound,
)
from broker.models import SITE_NAME_PATTERN, BrokerVm, VmKind
from broker.service import Broker
from broker.sites import SiteOperationRefused, SiteProvider
from broker.store import request_hash
from core.db import UTCDateTime, session_scope, utcnow
from core.errors import Conflict, NotFound, StratusError
from core.volume_request import UUID_PATTERN, VolumeCreateBase, VolumeListQuery, VolumeUpdate
from federation.errors import SiteFailed, VMNotFound

T = TypeVar("T")


def site_key(owner: str, key: str) -> str:
    """The ``Idempotency-Key`` sent to the site for ``owner``'s ``key`` (64 hex characters)."""
    return hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


# --- table ---------------------------------------------------------------------------


class BrokerVolume(SQLModel, table=True):
    """A volume the broker made at a site for a user.

    ``last`` is the volume as its site last showed it (shown, in state
    ``unknown``, while the site does not answer).  ``idempotency_key`` and
    ``request_hash`` make a repeated create return this volume.
    """

    __tablename__ = "broker_volumes"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key"),)

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    site: str = Field(index=True)
    site_volume_id: str = Field(index=True)
    idempotency_key: str | None = None
    request_hash: str | None = None
    last: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- API shapes ----------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerVolumeCreate(VolumeCreateBase):
    """Body of the broker's ``POST /volumes``: the site's create body plus ``site``.

    ``cow_of`` names a broker volume id.
    """

    site: str | None = PydField(
        default=None,
        pattern=SITE_NAME_PATTERN,
        description="create it at this site (default: cow_of's site, else the cheapest "
        "available site offering the image)",
    )


class BrokerVolumeShowQuery(_Input):
    wait: Literal["ready"] | None = PydField(
        default=None, description="wait until an image copy is finished (ready or failed)"
    )
    timeout: float = PydField(default=60.0, gt=0, le=600)


class BrokerVolumeAttach(_Input):
    """Body of ``POST /volumes/{id}/attach``: the broker's VM id (on the volume's site)."""

    vm_id: str = PydField(pattern=UUID_PATTERN)
    readonly: bool = False


class BrokerVolumeDetach(_Input):
    """Body of ``POST /volumes/{id}/detach``; ``vm_id`` may be left out if attached once."""

    vm_id: str | None = PydField(default=None, pattern=UUID_PATTERN)


class BrokerAttachment(BaseModel):
    vm_id: str = PydField(description="the broker's VM id")
    device: str
    readonly: bool


class BrokerVolumePublic(BaseModel):
    """The site's volume resource with broker ids, plus ``site`` and ``site_volume_id``."""

    id: str
    owner: str
    tag: str
    visibility: str
    size_gib: int
    format: str
    state: str = PydField(description="creating, ready, failed; unknown while its site is down")
    state_reason: str | None
    origin: str
    cow_of: str | None
    image: str | None
    attached: int = PydField(description="how many VMs (anyone's) have it attached")
    attachments: list[BrokerAttachment] = PydField(description="the caller's VMs only")
    created_at: datetime
    updated_at: datetime
    site: str = PydField(description="the site holding the volume")
    site_volume_id: str = PydField(description="the volume's id at its site")


class BrokerVolumeList(BaseModel):
    """A listing; ``partial`` with ``warnings`` when a site did not answer."""

    volumes: list[BrokerVolumePublic]
    partial: bool = False
    warnings: list[str] = PydField(default_factory=list)


class BrokerVolumeDeleted(BaseModel):
    id: str
    deleted: bool
    site: str


class BrokerVmDisk(BaseModel):
    """A disk plugged into a VM (broker ids), and the site where that happened."""

    vm_id: str
    device: str
    kind: Literal["volume", "static"]
    volume_id: str | None
    image: str | None
    readonly: bool
    site: str


# --- store ---------------------------------------------------------------------------


class VolumeStore:
    """Reads and writes of ``broker_volumes`` (and lookups of ``broker_vms`` by site id)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, row: BrokerVolume) -> bool:
        """Store a new volume; False (nothing stored) if its (owner, key) is already taken."""
        try:
            with session_scope(self.engine) as session:
                session.add(row)
        except IntegrityError:
            if row.idempotency_key is None:
                raise
            return False
        return True

    def by_key(self, owner: str, key: str) -> BrokerVolume | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.exec(
                select(BrokerVolume).where(
                    BrokerVolume.owner == owner, BrokerVolume.idempotency_key == key
                )
            ).first()

    def get(self, volume_id: str) -> BrokerVolume | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(BrokerVolume, volume_id)

    def owned(self, owner: str | None) -> list[BrokerVolume]:
        """Volumes of ``owner`` (None: everyone's), newest first."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(BrokerVolume)
            if owner is not None:
                query = query.where(BrokerVolume.owner == owner)
            return list(session.exec(query.order_by(col(BrokerVolume.created_at).desc())).all())

    def save_last(self, shapes: dict[str, dict[str, Any]]) -> None:
        """Remember how the site showed each volume (broker id -> site shape)."""
        with session_scope(self.engine) as session:
            for volume_id, shape in shapes.items():
                row = session.get(BrokerVolume, volume_id)
                if row is not None and row.last != shape:
                    row.last = shape
                    row.updated_at = utcnow()
                    session.add(row)

    def remove(self, volume_id: str) -> None:
        with session_scope(self.engine) as session:
            session.exec(delete(BrokerVolume).where(col(BrokerVolume.id) == volume_id))

    def site_ids(self, site: str, volume_ids: Iterable[str]) -> dict[str, str]:
        """Site volume id -> broker volume id, for those of ``volume_ids`` the broker knows."""
        ids = list(volume_ids)
        if not ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(
                select(BrokerVolume.site_volume_id, BrokerVolume.id).where(
                    BrokerVolume.site == site, col(BrokerVolume.site_volume_id).in_(ids)
                )
            ).all()
        return {site_id: broker_id for site_id, broker_id in rows}

    def vms_at(self, site: str, site_vm_ids: Iterable[str]) -> dict[str, BrokerVm]:
        """Site VM id -> the broker's VM record, for the VMs of ``site_vm_ids`` it knows."""
        ids = list(site_vm_ids)
        if not ids:
            return {}
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(BrokerVm).where(BrokerVm.site == site, col(BrokerVm.site_vm_id).in_(ids))
            ).all()
        return {r.site_vm_id: r for r in rows if r.site_vm_id is not None}


# --- service -------------------------------------------------------------------------


async def forwarded(site: str, call: Awaitable[T]) -> T:
    """Await a call to ``site``, turning its failures into the broker's HTTP errors.

    Unreachable or failing after retries: ``503 site_unreachable``; the site's
    404: ``404 not_found``; another 4xx of the site: passed on (code, status).
    """
    try:
        return await call
    except SiteFailed as exc:
        raise SiteUnreachable(f"site {site} did not answer: {exc.reason}") from exc
    except VMNotFound as exc:
        raise NotFound(f"site {site}: {exc.reason}") from exc
    except SiteOperationRefused as exc:
        error = StratusError(f"site {site}: {exc.message}", code=exc.code)
        error.status = exc.status
        raise error from exc


class VolumeService:
    """The broker's ``/volumes``: ownership records, placement, forwarding, aggregation."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.registry = broker.registry
        self.config = broker.config
        self.store = VolumeStore(broker.store.engine)

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def _row(self, principal: Principal, volume_id: str) -> BrokerVolume:
        row: BrokerVolume | None = await self._db(self.store.get, volume_id)
        if row is None or not principal.can_access(row.owner):
            raise NotFound(f"no volume with id {volume_id!r}")
        return row

    def _provider(self, site: str, what: str) -> SiteProvider:
        available, reason = self.registry.status(site)
        if not available:
            raise SiteUnreachable(f"cannot {what}: {reason}")
        return self.registry.site_provider(site)

    @staticmethod
    def _path(row: BrokerVolume, suffix: str = "") -> str:
        return "/volumes/" + quote(row.site_volume_id, safe="") + suffix

    # --- placement -------------------------------------------------------------------

    def choose_site(self, body: BrokerVolumeCreate, origin: BrokerVolume | None) -> str:
        """Where a new volume goes (see the module docstring); 404/409/503 when nowhere."""
        if body.site is not None:
            if not self.registry.is_site(body.site):
                raise UnknownSite(
                    f"unknown site {body.site!r} (volumes live at sites, not public clouds)",
                    details={"known": self.registry.site_names()},
                )
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
        for name in self.registry.site_names():
            available, reason = self.registry.status(name)
            report = self.registry.entries[name].report
            if not available or report is None:
                reasons[name] = reason or "unavailable"
                continue
            offered = set(report.cached_images) | set(report.fetchable_images or ())
            if (
                body.image is not None
                and report.fetchable_images is not None
                and body.image not in offered
            ):
                reasons[name] = f"does not offer image {body.image}"
                continue
            candidates.append((report.price_per_hour, name))
        if not candidates:
            raise Conflict(
                "no available site can take this volume",
                code="placement_failed",
                details={"sites": reasons},
            )
        return min(candidates)[1]

    # --- views -----------------------------------------------------------------------

    def _views(
        self, principal: Principal, pairs: list[tuple[BrokerVolume, dict[str, Any], str | None]]
    ) -> list[BrokerVolumePublic]:
        """Site shapes as the broker shows them: broker ids, owner, site; ``unknown`` state
        (with the reason) for a volume whose site did not answer."""
        by_site: dict[str, tuple[set[str], set[str]]] = {}
        for row, shape, _ in pairs:
            vm_ids, volume_ids = by_site.setdefault(row.site, (set(), set()))
            vm_ids.update(str(a.get("vm_id")) for a in shape.get("attachments") or [])
            if shape.get("cow_of"):
                volume_ids.add(str(shape["cow_of"]))
        vms = {site: self.store.vms_at(site, ids[0]) for site, ids in by_site.items()}
        volumes = {site: self.store.site_ids(site, ids[1]) for site, ids in by_site.items()}
        views = []
        for row, shape, unknown in pairs:
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
        self, principal: Principal, row: BrokerVolume, shape: Any
    ) -> BrokerVolumePublic:
        if not isinstance(shape, dict):
            raise SiteUnreachable(f"site {row.site} sent a malformed volume")
        await self._db(self.store.save_last, {row.id: shape})
        views: list[BrokerVolumePublic] = await self._db(
            self._views, principal, [(row, shape, None)]
        )
        return views[0]

    # --- operations ------------------------------------------------------------------

    async def create(
        self, principal: Principal, body: BrokerVolumeCreate, key: str | None
    ) -> tuple[BrokerVolumePublic, bool]:
        """Create the volume at its site; ``(volume, created)``: False for a repeated key."""
        owner = principal.account
        digest = request_hash(body.model_dump(mode="json"))
        if key is not None:
            existing: BrokerVolume | None = await self._db(self.store.by_key, owner, key)
            if existing is not None:
                return await self._repeat(principal, existing, digest, key), False
        origin = await self._row(principal, body.cow_of) if body.cow_of else None
        site = self.choose_site(body, origin)
        provider = self._provider(site, f"create a volume at site {site}")
        site_body = body.model_dump(mode="json", exclude={"site"}, exclude_none=True)
        if origin is not None:
            site_body["cow_of"] = origin.site_volume_id
        # The broker is one account at the site: namespace the user's key by owner, so
        # two users' keys never meet there. The site then makes one volume per key.
        headers = {"Idempotency-Key": site_key(owner, key)} if key is not None else None
        shape = await forwarded(
            site, provider.forward("POST", "/volumes", json=site_body, retry=False, headers=headers)
        )
        if not isinstance(shape, dict) or not isinstance(shape.get("id"), str):
            raise SiteUnreachable(f"site {site} sent a malformed volume")
        row = BrokerVolume(
            id=str(uuid.uuid4()),
            owner=owner,
            site=site,
            site_volume_id=shape["id"],
            idempotency_key=key,
            request_hash=digest,
            last=shape,
        )
        if not await self._db(self.store.insert, row):
            # A concurrent request with the same key won; the site answered both with
            # the same volume (same site key), so there is nothing to undo.
            assert key is not None
            winner = await self._db(self.store.by_key, owner, key)
            return await self._repeat(principal, winner, digest, key), False
        return await self._view(principal, row, shape), True

    async def _repeat(
        self, principal: Principal, row: BrokerVolume, digest: str, key: str
    ) -> BrokerVolumePublic:
        if row.request_hash != digest:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was already used for another volume request"
            )
        return await self.get(principal, row.id)

    async def list_volumes(self, principal: Principal, query: VolumeListQuery) -> BrokerVolumeList:
        """The caller's volumes (admins with ``all``: everyone's) at every site, at once."""
        owner = query.owner if query.all and principal.is_admin else principal.account
        rows: list[BrokerVolume] = await self._db(self.store.owned, owner)
        by_site: dict[str, list[BrokerVolume]] = {}
        for row in rows:
            by_site.setdefault(row.site, []).append(row)
        params = {k: v for k, v in (("tag", query.tag), ("visibility", query.visibility)) if v}
        timeout = self.config.broker.list_timeout_seconds
        warnings: list[str] = []
        pairs: dict[str, tuple[BrokerVolume, dict[str, Any], str | None]] = {}

        async def one(site: str, site_rows: list[BrokerVolume]) -> None:
            available, reason = self.registry.status(site)
            why: str | None = None
            if not available:
                why = reason or f"site {site} is unavailable"
                warnings.append(f"{why}; its volumes are shown as last known, in state unknown")
            else:
                try:
                    async with asyncio.timeout(timeout):
                        body = await self.registry.site_provider(site).forward(
                            "GET", "/volumes", params=params
                        )
                    live = {
                        v["id"]: v
                        for v in (body or {}).get("volumes", [])
                        if isinstance(v, dict) and isinstance(v.get("id"), str)
                    }
                except (SiteFailed, SiteOperationRefused, TimeoutError) as exc:
                    detail = exc.reason if isinstance(exc, SiteFailed) else None
                    detail = detail or str(exc) or f"no answer within {timeout:g}s"
                    why = f"site {site} did not answer: {detail}"
                    warnings.append(f"site {site} did not answer ({detail}); listing is partial")
                else:
                    for row in site_rows:
                        shape = live.get(row.site_volume_id)
                        if shape is not None:
                            pairs[row.id] = (row, shape, None)
                    return
            for row in site_rows:
                if _matches(row.last, query):
                    pairs[row.id] = (row, row.last, why)

        await asyncio.gather(*(one(site, site_rows) for site, site_rows in by_site.items()))
        fresh = {vid: shape for vid, (_, shape, why) in pairs.items() if why is None}
        if fresh:
            await self._db(self.store.save_last, fresh)
        ordered = [pairs[row.id] for row in rows if row.id in pairs]
        views = await self._db(self._views, principal, ordered)
        return BrokerVolumeList(volumes=views, partial=bool(warnings), warnings=sorted(warnings))

    async def get(
        self, principal: Principal, volume_id: str, *, wait: bool = False, timeout: float = 60.0
    ) -> BrokerVolumePublic:
        """One volume, asked of its site (``wait``: until an image copy is finished)."""
        row = await self._row(principal, volume_id)
        provider = self._provider(row.site, f"show volume {volume_id}")
        params: dict[str, Any] = {"wait": "ready", "timeout": timeout} if wait else {}
        shape = await forwarded(
            row.site,
            provider.forward(
                "GET", self._path(row), params=params, timeout=(timeout + 10.0) if wait else None
            ),
        )
        return await self._view(principal, row, shape)

    async def update(
        self, principal: Principal, volume_id: str, body: VolumeUpdate
    ) -> BrokerVolumePublic:
        row = await self._row(principal, volume_id)
        provider = self._provider(row.site, f"change volume {volume_id}")
        changes = body.model_dump(mode="json", exclude_none=True)
        shape = await forwarded(row.site, provider.forward("PATCH", self._path(row), json=changes))
        return await self._view(principal, row, shape)

    async def delete(self, principal: Principal, volume_id: str) -> BrokerVolumeDeleted:
        """Delete at the site, then forget it; a volume the site no longer has is forgotten."""
        row = await self._row(principal, volume_id)
        provider = self._provider(row.site, f"delete volume {volume_id}")
        with contextlib.suppress(NotFound):
            await forwarded(row.site, provider.forward("DELETE", self._path(row), retry=False))
        await self._db(self.store.remove, row.id)
        return BrokerVolumeDeleted(id=row.id, deleted=True, site=row.site)

    async def _vm_on_site(self, principal: Principal, row: BrokerVolume, vm_id: str) -> BrokerVm:
        vm = await self._db(self.broker.store.get, vm_id)
        if vm is None or not principal.can_access(vm.owner, vm.group):
            raise VmNotFound(f"no VM with id {vm_id!r}")
        if vm.kind != VmKind.SITE.value or vm.site != row.site or vm.site_vm_id is None:
            where = f"on {vm.site}" if vm.site else "not placed on any site"
            raise InvalidOperation(
                f"volume {row.id} is on site {row.site} and VM {vm_id} is {where}: a volume "
                f"can only be attached to a VM of its own site"
            )
        return vm

    async def _disk(self, principal: Principal, row: BrokerVolume, disk: Any) -> BrokerVmDisk:
        if not isinstance(disk, dict):
            raise SiteUnreachable(f"site {row.site} sent a malformed disk")
        vms = await self._db(self.store.vms_at, row.site, [str(disk.get("vm_id"))])
        vm = vms.get(str(disk.get("vm_id")))
        return BrokerVmDisk.model_validate(
            {
                **disk,
                "vm_id": vm.id if vm is not None else disk.get("vm_id"),
                "volume_id": row.id,
                "site": row.site,
            }
        )

    async def attach(
        self, principal: Principal, volume_id: str, body: BrokerVolumeAttach
    ) -> BrokerVmDisk:
        """Hot-plug into the caller's VM on the same site; the answer names the device."""
        row = await self._row(principal, volume_id)
        vm = await self._vm_on_site(principal, row, body.vm_id)
        provider = self._provider(row.site, f"attach volume {volume_id}")
        disk = await forwarded(
            row.site,
            provider.forward(
                "POST",
                self._path(row, "/attach"),
                json={"vm_id": vm.site_vm_id, "readonly": body.readonly},
                retry=False,
            ),
        )
        return await self._disk(principal, row, disk)

    async def detach(
        self, principal: Principal, volume_id: str, body: BrokerVolumeDetach
    ) -> BrokerVmDisk:
        """Hot-unplug from ``vm_id`` (or from the one VM that has it)."""
        row = await self._row(principal, volume_id)
        site_body: dict[str, Any] = {}
        if body.vm_id is not None:
            vm = await self._vm_on_site(principal, row, body.vm_id)
            site_body["vm_id"] = vm.site_vm_id
        provider = self._provider(row.site, f"detach volume {volume_id}")
        disk = await forwarded(
            row.site,
            provider.forward("POST", self._path(row, "/detach"), json=site_body, retry=False),
        )
        return await self._disk(principal, row, disk)


def _matches(shape: dict[str, Any], query: VolumeListQuery) -> bool:
    """Whether a last-known shape passes the listing's filters (sites filter live ones)."""
    if query.visibility is not None and shape.get("visibility") != query.visibility:
        return False
    return query.tag is None or re.search(query.tag, str(shape.get("tag", ""))) is not None
