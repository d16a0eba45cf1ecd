"""Database access for images (synchronous; the cache runs it in a thread).

State changes that can race (claiming a download, evicting, finishing or
dropping a save) are compare-and-set updates: they change the row only if it
is still in the expected state, and report whether they did. That makes the
image row the lock that keeps concurrent first uses to one download, also
across processes sharing the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from core.db import session_scope, utcnow
from core.resources.images import ImageSource, ImageState
from site_agent.images.errors import ImageNameTaken
from site_agent.images.models import Image


class ImageRepository:
    """All SQL the image cache needs. Each method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, image: Image) -> Image:
        """Store a new image; ``ImageNameTaken`` if the name is in use."""
        try:
            with session_scope(self.engine) as session:
                session.add(image)
        except IntegrityError as exc:
            raise ImageNameTaken(image.name) from exc
        return image

    def by_name(self, name: str) -> Image | None:
        with session_scope(self.engine) as session:
            return session.exec(select(Image).where(Image.name == name)).first()

    def get(self, image_id: str) -> Image | None:
        with session_scope(self.engine) as session:
            return session.get(Image, image_id)

    def list_all(self) -> list[Image]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Image).order_by(col(Image.name))).all())

    def change_state(
        self,
        image_id: str,
        target: ImageState,
        reason: str | None,
        *,
        expect: ImageState | tuple[ImageState, ...] | None = None,
        **fields: Any,
    ) -> bool:
        """Set ``state``/``state_reason`` and ``fields``; only from ``expect`` if given.

        Returns False (changing nothing) when the row is gone or not in ``expect``.
        """
        values: dict[str, Any] = {
            "state": target,
            "state_reason": reason,
            "updated_at": utcnow(),
            **fields,
        }
        stmt = update(Image).where(col(Image.id) == image_id)
        if expect is not None:
            states = [expect] if isinstance(expect, ImageState) else list(expect)
            stmt = stmt.where(col(Image.state).in_([str(s) for s in states]))
        with session_scope(self.engine) as session:
            result = session.exec(stmt.values(**values))
            return bool(result.rowcount)

    def touch(self, image_id: str) -> None:
        """Record a use now (the LRU order)."""
        with session_scope(self.engine) as session:
            session.exec(
                update(Image).where(col(Image.id) == image_id).values(last_used_at=utcnow())
            )

    def delete(self, image_id: str) -> None:
        with session_scope(self.engine) as session:
            image = session.get(Image, image_id)
            if image is not None:
                session.delete(image)

    def evictable(self) -> list[Image]:
        """Cached images that can be fetched again (``url`` source, ``ready``), LRU first."""
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Image).where(
                    Image.source == ImageSource.URL, Image.state == ImageState.READY
                )
            ).all()
        return sorted(rows, key=lambda r: r.last_used_at or r.cached_at or r.created_at)

    def downloading(self) -> list[Image]:
        with session_scope(self.engine) as session:
            return list(
                session.exec(select(Image).where(Image.state == ImageState.DOWNLOADING)).all()
            )

    def saving(self) -> list[Image]:
        """Images being saved from a VM (their ``origin_vm`` is the VM)."""
        with session_scope(self.engine) as session:
            return list(session.exec(select(Image).where(Image.state == ImageState.SAVING)).all())

    def saving_for(self, vm_id: str) -> Image | None:
        with session_scope(self.engine) as session:
            return session.exec(
                select(Image).where(Image.origin_vm == vm_id, Image.state == ImageState.SAVING)
            ).first()
