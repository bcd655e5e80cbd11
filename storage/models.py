"""The tables: a response (one recording), its grades (one per model run) and examiners' overrides of a grade.

Overrides are append-only: a correction is a new row and the model's grade is never rewritten, so the record of
who decided what, and when, survives for appeals and for measuring how far examiners agree with the model.
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

AGREEMENTS = ("agree", "partly", "disagree")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A UTC instant on every backend: stored naive in UTC (SQLite keeps no time zone), read back aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value}: pass an aware one, so the stored instant is unambiguous")
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them on every backend.
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s"})
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class Response(Base):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    audio_sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    duration_s: Mapped[float]
    part: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    candidate_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    prompt_text: Mapped[str | None] = mapped_column(sa.Text)
    audio_path: Mapped[str | None] = mapped_column(sa.Text)  # set only where the retention policy keeps audio
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Grade(Base):
    __tablename__ = "grades"

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(sa.ForeignKey("responses.id"), index=True)
    checkpoint_id: Mapped[str] = mapped_column(sa.String(255))
    scale_name: Mapped[str] = mapped_column(sa.String(64))
    scores: Mapped[dict[str, Any]]  # {aspect: {"regression", "soft", "hard", "probs"}}, headline aspect first
    # The headline aspect's scores again, as columns, so that queries need not open the JSON.
    headline: Mapped[str | None] = mapped_column(sa.String(64))
    regression: Mapped[float | None]
    soft: Mapped[float | None]
    hard: Mapped[float | None]
    scorable: Mapped[bool]
    gate_reason: Mapped[str | None] = mapped_column(sa.Text)
    gate_measures: Mapped[dict[str, Any]]
    evidence: Mapped[dict[str, Any] | None]  # transcript, fluency measures: filled in by the evidence module
    latency_s: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Override(Base):
    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Made by the client before the first write attempt: replaying a queued override can never duplicate it.
    override_uuid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    grade_id: Mapped[int] = mapped_column(sa.ForeignKey("grades.id"), index=True)
    examiner: Mapped[str] = mapped_column(sa.String(128), index=True)
    final_score: Mapped[float]
    agreement: Mapped[str] = mapped_column(
        sa.Enum(*AGREEMENTS, name="agreement", native_enum=False, create_constraint=True, length=8))
    reason_code: Mapped[str | None] = mapped_column(sa.String(64))
    comment: Mapped[str | None] = mapped_column(sa.Text)
    # When the examiner decided (kept through the outbox), which orders overrides: the newest is the one in force.
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
