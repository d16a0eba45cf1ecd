"""core.db: engines for SQLite and PostgreSQL, UTC timestamps that round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlmodel import Field, SQLModel, select

from core.db import UTCDateTime, create_tables, make_engine, session_scope


class Stamp(SQLModel, table=True):
    __tablename__ = "test_stamps"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)


def test_timestamps_round_trip_as_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    paris = timezone(timedelta(hours=1))
    written = datetime(2026, 11, 24, 23, 30, tzinfo=paris)
    with session_scope(engine) as session:
        session.add(Stamp(at=written))
    with session_scope(engine) as session:
        row = session.exec(select(Stamp)).one()
        # Same instant, reported in UTC.
        assert row.at == written
        assert row.at.tzinfo == UTC
        assert row.at.hour == 22
        later = session.exec(
            select(Stamp).where(Stamp.at > datetime(2026, 11, 24, 22, 0, tzinfo=UTC))
        ).all()
        assert len(later) == 1
    engine.dispose()


def test_naive_datetimes_are_refused(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    create_tables(engine)
    with pytest.raises(Exception, match="naive"), session_scope(engine) as session:
        session.add(Stamp(at=datetime(2026, 1, 1)))
    engine.dispose()


def test_sqlite_uses_wal(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    engine.dispose()
