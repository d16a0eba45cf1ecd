"""Volume and attachment SQL (synchronous; callers run it in a thread).

Each method is one transaction. Rules (who may attach what) live in the
service; this module only stores and reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, func, or_, select

from core import idempotency
from core.db import session_scope, utcnow
from core.resources.volumes import VolumeState
from core.vm_state import TERMINAL_STATES
from site_agent.vms.models import Vm
from site_agent.volumes.models import Volume, VolumeAttachment

#: ``core.idempotency`` scope of volume creates.
SCOPE = "volumes"


class VolumeRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----- volumes ---------------------------------------------------------------

    def insert(self, volume: Volume, key: str | None = None, digest: str = "") -> Volume:
        """Store ``volume`` and, with ``key``, the key's record (``core.idempotency``), atomically.

        If another process stored the same key first, nothing is stored and
        the volume that request made is returned instead (``IdempotencyKeyReused``
        if it came with another body).
        """
        try:
            with session_scope(self.engine) as session:
                if key is not None:
                    idempotency.remember(session, volume.owner, SCOPE, key, digest, [volume.id])
                session.add(volume)
            return volume
        except IntegrityError:
            if key is None:
                raise
            earlier = self.find_idempotent(volume.owner, key, digest)
            stored = self.get(earlier) if earlier is not None else None
            if stored is None:
                raise
            return stored

    def find_idempotent(self, owner: str, key: str, digest: str) -> str | None:
        """The id of the volume ``owner`` created under ``key``, or None if the key is new.

        ``core.idempotency.IdempotencyKeyReused`` (409) if the key came with another body.
        """
        with session_scope(self.engine) as session:
            ids = idempotency.find(session, owner, SCOPE, key, digest)
        return ids[0] if ids else None

    def get(self, volume_id: str) -> Volume | None:
        with session_scope(self.engine) as session:
            return session.get(Volume, volume_id)

    def list_volumes(
        self,
        viewer: str | None,
        *,
        visibility: str | None = None,
        owner: str | None = None,
        via: str | None = None,
    ) -> list[Volume]:
        """Volumes ``viewer`` may see (its own and public ones; all for ``None``), newest first.

        ``via``: only those the broker of that name created.
        """
        with session_scope(self.engine) as session:
            query = select(Volume)
            if viewer is not None:
                query = query.where(or_(Volume.owner == viewer, Volume.visibility == "public"))
            if visibility is not None:
                query = query.where(Volume.visibility == visibility)
            if owner is not None:
                query = query.where(Volume.owner == owner)
            if via is not None:
                query = query.where(Volume.via == via)
            return list(session.exec(query.order_by(col(Volume.created_at).desc())).all())

    def usage(self, owner: str) -> tuple[int, int]:
        """``(count, total GiB)`` of ``owner``'s volumes that count against the quota."""
        with session_scope(self.engine) as session:
            count, total = session.exec(
                select(func.count(), func.coalesce(func.sum(Volume.size_gib), 0)).where(
                    Volume.owner == owner, Volume.state != VolumeState.FAILED
                )
            ).one()
            return int(count), int(total)

    def update(self, volume_id: str, **fields: Any) -> Volume:
        with session_scope(self.engine) as session:
            volume = session.get(Volume, volume_id, with_for_update=True)
            if volume is None:
                raise KeyError(volume_id)
            for name, value in fields.items():
                setattr(volume, name, value)
            volume.updated_at = utcnow()
            session.add(volume)
            return volume

    def delete(self, volume_id: str) -> None:
        with session_scope(self.engine) as session:
            volume = session.get(Volume, volume_id)
            if volume is not None:
                session.delete(volume)

    def children(self, volume_id: str) -> list[str]:
        """Ids of the volumes made copy-on-write from ``volume_id``."""
        with session_scope(self.engine) as session:
            return list(session.exec(select(Volume.id).where(Volume.cow_of == volume_id)).all())

    def with_children(self, volume_ids: Iterable[str]) -> set[str]:
        """Which of ``volume_ids`` are the origin of at least one copy-on-write volume."""
        ids = list(volume_ids)
        if not ids:
            return set()
        with session_scope(self.engine) as session:
            rows = session.exec(select(Volume.cow_of).where(col(Volume.cow_of).in_(ids))).all()
            return {r for r in rows if r is not None}

    def images_in_use(self) -> list[str]:
        """Images the volumes need now: static disks attached, image copies in progress.

        Registered with the image cache as a usage source, so it neither
        evicts nor deletes them.
        """
        with session_scope(self.engine) as session:
            static = session.exec(
                select(VolumeAttachment.image).where(col(VolumeAttachment.image).is_not(None))
            ).all()
            copying = session.exec(
                select(Volume.image).where(
                    Volume.state == VolumeState.CREATING, col(Volume.image).is_not(None)
                )
            ).all()
        return sorted({name for name in (*static, *copying) if name is not None})

    # ----- attachments ----------------------------------------------------------------

    def attachments_of_volumes(
        self, volume_ids: Iterable[str]
    ) -> dict[str, list[VolumeAttachment]]:
        """Current attachments of each of ``volume_ids`` (ids without any are absent)."""
        ids = list(volume_ids)
        result: dict[str, list[VolumeAttachment]] = {}
        if not ids:
            return result
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(VolumeAttachment).where(col(VolumeAttachment.volume_id).in_(ids))
            ).all()
        for row in rows:
            assert row.volume_id is not None
            result.setdefault(row.volume_id, []).append(row)
        return result

    def attachments_of_vm(self, vm_id: str) -> list[VolumeAttachment]:
        """The VM's attachments, by device."""
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(VolumeAttachment).where(VolumeAttachment.vm_id == vm_id)
            ).all()
        return sorted(rows, key=lambda a: (len(a.device), a.device))

    def add_attachment(self, attachment: VolumeAttachment) -> VolumeAttachment:
        with session_scope(self.engine) as session:
            session.add(attachment)
            return attachment

    def remove_attachment(self, attachment_id: int) -> None:
        with session_scope(self.engine) as session:
            row = session.get(VolumeAttachment, attachment_id)
            if row is not None:
                session.delete(row)

    def release_vm(self, vm_id: str) -> list[VolumeAttachment]:
        """Delete every attachment of ``vm_id``; returns them."""
        with session_scope(self.engine) as session:
            rows = list(
                session.exec(select(VolumeAttachment).where(VolumeAttachment.vm_id == vm_id)).all()
            )
            for row in rows:
                session.delete(row)
            return rows

    def release_finished(self) -> int:
        """Delete the attachments of VMs that are ``done``/``failed``; returns how many."""
        finished = select(Vm.id).where(col(Vm.state).in_(list(TERMINAL_STATES)))
        with session_scope(self.engine) as session:
            result = session.exec(
                delete(VolumeAttachment).where(col(VolumeAttachment.vm_id).in_(finished))
            )
            return int(result.rowcount or 0)
