"""The tables: exam sessions, a response (one recording), its grades (one per model run) and examiners' marks of a
grade (the `overrides` table: every row made before marking phases existed is a first mark).

Marks are append-only: a correction is a new row and the model's grade is never rewritten, so the record of who
decided what, when, in which role and phase, and what they had seen, survives for appeals and for measuring how far
examiners agree with the model and with each other.
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

AGREEMENTS = ("agree", "partly", "disagree")
ROLES = ("examiner", "adjudicator", "admin")  # from the auth file; admins may do all an adjudicator does
PHASES = ("first", "second", "adjudication")
# What a marker can have been shown before entering a mark (`seen`, in the order shown): the recording, the model's
# score and distribution, its evidence (transcript, fluency, words), other examiners' marks.
SEEN = ("audio", "model", "evidence", "marks")

# Text widths, owned here: each column is this wide on every backend (PostgreSQL enforces it, SQLite would not), and
# the UI and Database refuse longer text before storing anything.
MAX_CANDIDATE = 128
MAX_PART = 64
MAX_FILE_NAME = 255
MAX_SESSION_NAME = 128
MAX_EXAMINER = 128
MAX_REASON_CODE = 64


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
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON(), list[str]: sa.JSON()}


def enum(values: tuple[str, ...], name: str) -> sa.Enum:
    """Text checked against `values` (a CHECK constraint, the same on every backend)."""
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=max(map(len, values)))


class ExamSession(Base):
    """An exam session (a batch, a sitting): its name, its candidates, and how much of it is double-marked."""

    __tablename__ = "sessions"
    __table_args__ = (sa.CheckConstraint("double_marking >= 0 AND double_marking <= 1", name="double_marking"),
                      sa.CheckConstraint("threshold IS NULL OR threshold >= 0", name="threshold"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(MAX_SESSION_NAME), unique=True)
    # The share (0-1) of its responses that need a second marker, sampled by a hash (storage.marking.sampled).
    double_marking: Mapped[float] = mapped_column(default=0.0)
    # Two marks further apart than this go to adjudication; NULL: one class step of the grade's scale.
    threshold: Mapped[float | None]
    candidates: Mapped[list[str] | None]  # the candidate ids expected, where known
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Response(Base):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    audio_sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    duration_s: Mapped[float]
    part: Mapped[str | None] = mapped_column(sa.String(MAX_PART), index=True)
    candidate_id: Mapped[str | None] = mapped_column(sa.String(MAX_CANDIDATE), index=True)
    session_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sessions.id"), index=True)
    file_name: Mapped[str | None] = mapped_column(sa.String(MAX_FILE_NAME))  # as uploaded, to tell Batch rows apart
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
    # Why an examiner should listen, as the grader said: {"reasons": [{"code", "text"}], "reference": {"found",
    # "words"} | None (no reference text)}; None on grades stored before it was recorded.
    review: Mapped[dict[str, Any] | None]
    latency_s: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Override(Base):
    """An examiner's mark of a grade (named for what it first was: an override of the model's score)."""

    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Made by the client before the first write attempt: replaying a queued override can never duplicate it.
    override_uuid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    grade_id: Mapped[int] = mapped_column(sa.ForeignKey("grades.id"), index=True)
    examiner: Mapped[str] = mapped_column(sa.String(MAX_EXAMINER), index=True)
    final_score: Mapped[float]
    # With the model's score; None where the model was not seen before marking (blind) or scored nothing.
    agreement: Mapped[str | None] = mapped_column(enum(AGREEMENTS, "agreement"))
    reason_code: Mapped[str | None] = mapped_column(sa.String(MAX_REASON_CODE))
    comment: Mapped[str | None] = mapped_column(sa.Text)
    # When the examiner decided (kept through the outbox), which orders overrides: the newest is the one in force.
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    role: Mapped[str] = mapped_column(enum(ROLES, "role"), default="examiner", server_default="examiner")
    phase: Mapped[str] = mapped_column(enum(PHASES, "phase"), default="first", server_default="first", index=True)
    # Whether the model's result was on screen before this mark was entered (rows from before blind marking: yes).
    model_seen: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    seen: Mapped[list[str] | None]  # what was shown before the mark, in order (SEEN); NULL: not recorded
