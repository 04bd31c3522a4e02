"""ORM models of the store. Private: nothing outside ``nasforge.store`` sees these rows.

The schema itself is created by the Alembic migrations in ``migrations/versions``; these models
describe the same tables for queries (a test checks the two agree).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def dumps_json(value: Any) -> str:
    """JSON text that round-trips NaN and +-inf (stored as the tokens Python's json reads back).

    Objects with ``tolist()`` (numpy arrays and scalars) are stored as lists / scalars.
    """

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        raise TypeError(f"value of type {type(obj).__name__} cannot be stored as JSON")

    return json.dumps(value, separators=(",", ":"), default=default, allow_nan=True)


class JsonText(TypeDecorator[Any]):
    """JSON kept as text: the same bytes on SQLite and PostgreSQL, NaN and inf preserved."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else dumps_json(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else json.loads(value)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "nf_jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    spec: Mapped[Any] = mapped_column(JsonText)
    state: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: seconds of the job's ended runs; with active_since, the job's run time without the gaps
    run_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    active_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CandidateRow(Base):
    __tablename__ = "nf_candidates"
    __table_args__ = (
        UniqueConstraint("job_id", "key", name="uq_nf_candidates_job_key"),
        Index("ix_nf_candidates_job_seq", "job_id", "seq"),
        Index("ix_nf_candidates_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(128), ForeignKey("nf_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64))
    arch: Mapped[Any] = mapped_column(JsonText)
    status: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[Any] = mapped_column(JsonText, nullable=True)
    device: Mapped[Any] = mapped_column(JsonText, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(256), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    pareto: Mapped[bool] = mapped_column(Boolean, default=False)


class CheckpointRow(Base):
    __tablename__ = "nf_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_nf_checkpoints_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(128), ForeignKey("nf_jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    state: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class MetricsCacheRow(Base):
    __tablename__ = "nf_metrics_cache"

    arch_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    metrics: Mapped[Any] = mapped_column(JsonText)
    created_at: Mapped[datetime] = mapped_column(DateTime)


jobs = JobRow.__table__
candidates = CandidateRow.__table__
checkpoints = CheckpointRow.__table__
metrics_cache = MetricsCacheRow.__table__
