"""The database the app writes grades and examiner overrides to.

SQLite by default (one file, WAL, so readers never wait for the writer), any SQLAlchemy URL for a team (PostgreSQL).
Every write commits before it returns. On SQLite, `synchronous=FULL` makes a commit fsync the WAL, so an acknowledged
override survives a power cut or an OS crash, not only a crash of the app (which NORMAL already survives); it costs
one fsync, a few milliseconds, per write, which an examiner clicking "save" never notices.

An override that cannot be written (database locked, read-only, disk full, unreachable) goes to a durable outbox
file (beside the database unless put elsewhere) and is replayed later, so an override the examiner was told is saved
is never lost.

The app never opens the SQLite file itself (closing any descriptor of it would drop SQLite's POSIX locks, and another
process could then delete the WAL under it), and before a write commits it checks that the file, and its WAL, are
still the ones it opened: a write into a deleted or replaced file would vanish at the next start, so from then on
nothing is acknowledged as stored until the app restarts. A damaged file is refused at open, and left as it is.
"""

import logging
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from .engine import Synchronous, make_engine, migrate, sqlite_path
from .errors import DatabaseCorrupt, DatabaseGone, DatabaseUnavailable, StorageError, storage_error
from .export import history_row, write_history_csv
from .models import AGREEMENTS, Grade, Override, Response, utcnow
from .outbox import Outbox, outbox_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "data" / "grades.db"
log = logging.getLogger(__name__)
QUEUED = "your override was kept and will be retried"
RECORD_FIELDS = ("override_uuid", "grade_id", "examiner", "final_score", "agreement", "reason_code", "comment",
                 "created_at")


@dataclass(frozen=True)
class Receipt:
    """What became of an override: stored (`id` set), or queued in the outbox (`error` says why, for the UI)."""

    uuid: str
    id: int | None
    error: StorageError | None = None

    @property
    def queued(self) -> bool:
        return self.id is None


class Database:
    """The app's one handle on storage (open it once per process with Database.open). Each call runs in its own
    short transaction, so one Database serves the web app's threads and any number of processes share the file."""

    def __init__(self, engine: sa.Engine, outbox: Outbox | None):
        self.engine = engine
        self.outbox = outbox
        self._writer = engine.execution_options(write=True)
        self.path = sqlite_path(str(engine.url))
        self.gone: Path | None = None  # set once the file (or its WAL) is found deleted or replaced
        self._file: tuple[int, int] | None = None  # the opened SQLite file's (device, inode)
        self._wal: tuple[int, int] | None = None  # its WAL's, as of the last commit; None after a connection closed
        self._uses_wal = False

    @classmethod
    def open(cls, url: str | Path | None = None, *, outbox: str | Path | None = None, busy_timeout_s: float = 10.0,
             synchronous: Synchronous = "FULL") -> Self:
        """Open (creating and migrating as needed) the database at a SQLAlchemy URL or a SQLite file path; by
        default $DATABASE_URL, else data/grades.db in the repo. The outbox defaults to `<database file>.outbox.jsonl`;
        a server database has none unless one is given, and a failed override write then raises."""
        url = url or os.environ.get("DATABASE_URL") or DEFAULT_PATH
        if isinstance(url, Path) or "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(url).resolve()}"
        path = sqlite_path(url)
        outbox = outbox or (path and outbox_path(path))
        queue = Outbox(outbox, check=check_record) if outbox else None
        if path and not path.exists():
            if queue and (waiting := len(queue.read())):
                raise DatabaseUnavailable(
                    f"restore it from a backup before starting, or move the outbox away to start an empty database",
                    detail=f"there is no database at {path}, but the outbox {queue.path} holds {waiting} override(s) "
                           "made for it")
            log.info("no database at %s: creating a new one", path)
        db = cls(make_engine(url, busy_timeout_s, synchronous), queue)
        try:
            if path and path.exists():
                db._check_integrity()
            migrate(db.engine)
            if path:
                db._watch()
        except sa.exc.DatabaseError as error:
            db.close()
            raise storage_error(error, f"{path or 'the database'} was left as it is" if path else "") from error
        except StorageError:
            db.close()
            raise
        db.flush_outbox()
        return db

    def _check_integrity(self) -> None:
        """Refuse a damaged file before anything is written to it (PRAGMA quick_check: every page, in O(N))."""
        with self.engine.connect() as connection:
            problems = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise DatabaseCorrupt(f"{self.path} was left as it is: recover it or restore a backup (README, Backups)",
                                  detail=f"{len(problems)} problem(s), first: {problems[0]}")

    def _watch(self) -> None:
        """Remember the file opened, to notice it being deleted or replaced (_check_files)."""
        with self.engine.connect() as connection:
            self._uses_wal = connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        self._file = _identity(self.path)
        sa.event.listen(self.engine, "close", lambda *_: setattr(self, "_wal", None))  # SQLite may drop the WAL

    def _check_files(self, fate: str) -> None:
        """Inside a write transaction, before it commits: the SQLite file and its WAL must still be the ones this
        process writes to. The WAL exists while any connection is in a transaction, and keeps its inode while this
        process holds a connection; a missing or new one means another process deleted it under us."""
        if self._file is None:
            return
        if self.gone is None:
            wal = _identity(self.path.with_name(self.path.name + "-wal")) if self._uses_wal else None
            if _identity(self.path) != self._file:
                self.gone = self.path
            elif self._uses_wal and (wal is None or self._wal not in (None, wal)):
                self.gone = self.path.with_name(self.path.name + "-wal")
            else:
                self._wal = wal
                return
            log.error("%s was deleted or replaced while the app ran: nothing is acknowledged as stored until the "
                      "database is back and the app restarts", self.gone)
        raise DatabaseGone(fate)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool = False, fate: str = "") -> Iterator[Session]:
        """A transaction, committed on leaving; database failures come out as StorageError."""
        if write and self.gone:
            raise DatabaseGone(fate)
        try:
            with Session(self._writer if write else self.engine, expire_on_commit=False) as session, session.begin():
                yield session
                if write:
                    session.flush()
                    self._check_files(fate)
        except sa.exc.IntegrityError as error:
            raise ValueError(f"the database refused the record: {error.orig}") from error
        except sa.exc.DatabaseError as error:  # locked, read-only, full, unreachable, damaged
            raise storage_error(error, fate) from error

    def _add(self, row: Response | Grade | Override, fate: str) -> int:
        with self._session(write=True, fate=fate) as session:
            session.add(row)
            session.flush()
            return row.id

    def add_response(self, *, audio_sha256: str, duration_s: float, part: str | None = None,
                     candidate_id: str | None = None, prompt_text: str | None = None,
                     audio_path: str | None = None) -> int:
        """Store one recording's metadata (its audio only as a path, where retention keeps it); returns its id."""
        return self._add(Response(audio_sha256=audio_sha256, duration_s=duration_s, part=part,
                                  candidate_id=candidate_id, prompt_text=prompt_text, audio_path=audio_path),
                         "the response was not saved")

    def add_grade(self, response_id: int, *, checkpoint_id: str, scale_name: str, scores: dict[str, dict[str, Any]],
                  scorable: bool, latency_s: float, headline: str | None = None, gate_reason: str | None = None,
                  gate_measures: dict[str, Any] | None = None, evidence: dict[str, Any] | None = None) -> int:
        """Store a model's grade of a response; returns its id. `scores` is {aspect: {"regression", "soft", "hard",
        "probs"}} (Prediction.to_dict()["scores"]); the headline aspect (default: the first) is also kept as columns.
        A non-scorable response gets a grade too, with empty scores and the gate's reason."""
        headline = headline or next(iter(scores), None)
        top = scores[headline] if headline else {}
        return self._add(Grade(response_id=response_id, checkpoint_id=checkpoint_id, scale_name=scale_name,
                               scores=scores, headline=headline, regression=top.get("regression"),
                               soft=top.get("soft"), hard=top.get("hard"), scorable=scorable, gate_reason=gate_reason,
                               gate_measures=gate_measures or {}, evidence=evidence, latency_s=latency_s),
                         "the grade was not saved")

    def set_evidence(self, grade_id: int, evidence: dict[str, Any]) -> None:
        """Attach the evidence (transcript, fluency measures), which is computed after the grade is shown. The
        grade's scores are not touched."""
        with self._session(write=True, fate="the evidence was not saved") as session:
            grade = session.get(Grade, grade_id)
            if grade is None:
                raise ValueError(f"no grade {grade_id}")
            grade.evidence = evidence

    def add_override(self, grade_id: int, *, examiner: str, final_score: float, agreement: str,
                     reason_code: str | None = None, comment: str | None = None) -> Receipt:
        """Record an examiner's decision on a grade, as a new row (append-only). Committed before it returns; if the
        database cannot take it, it is queued in the outbox (fsync'd) and the receipt says so. Raises ValueError (or
        TypeError) for invalid input, and StorageError only when the override could be neither stored nor queued."""
        record = override_record(grade_id, examiner=examiner, final_score=final_score, agreement=agreement,
                                 reason_code=reason_code, comment=comment)
        try:
            receipt = Receipt(record["override_uuid"], self._store_override(record))
        except StorageError as error:
            if self.outbox is None:
                raise type(error)("your override was NOT saved: please try again") from error
            try:
                self.outbox.append(record)
            except OSError as outbox_error:
                raise type(error)(f"your override was NOT saved, and could not be queued either ({outbox_error}): "
                                  "please try again") from outbox_error
            return Receipt(record["override_uuid"], None, error)
        if self.outbox:
            try:
                self.flush_outbox()  # the database takes writes again: send what waited
            except Exception as flush_error:  # this override is stored: say so, whatever became of the others
                log.warning("outbox not flushed after override %s: %s", receipt.uuid, type(flush_error).__name__)
        return receipt

    def _store_override(self, record: dict[str, Any]) -> int:
        """Insert a validated override record; returns its id, also when it was stored before (a replay)."""
        row = Override(**record | {"created_at": datetime.fromisoformat(record["created_at"])})
        try:
            return self._add(row, QUEUED)
        except ValueError:
            with self._session() as session:
                stored = session.scalar(sa.select(Override.id).where(Override.override_uuid == row.override_uuid))
            if stored is None:
                raise
            return stored

    def flush_outbox(self) -> int:
        """Replay queued overrides, oldest first; returns how many left the queue (stored now, or found stored by
        an earlier replay). Stops quietly while the database still refuses writes. One it refuses for good (its
        grade is gone) stays queued, with a warning, for a person to look at."""
        if not self.outbox:
            return 0
        stored: set[str] = set()
        for record in self.outbox.read():
            try:
                self._store_override(record)
            except StorageError:
                break
            except ValueError as error:
                log.warning("queued override %s refused: %s", record["override_uuid"], error)
                continue
            stored.add(record["override_uuid"])
        self.outbox.remove(stored)
        return len(stored)

    def grade(self, grade_id: int) -> dict[str, Any] | None:
        """One grade in full (scores, gate, evidence) with its response and every override, oldest first."""
        with self._session() as session:
            grade = session.get(Grade, grade_id)
            if grade is None:
                return None
            overrides = session.scalars(sa.select(Override).where(Override.grade_id == grade_id)
                                        .order_by(Override.created_at, Override.id))
            return as_dict(grade) | {"response": as_dict(session.get_one(Response, grade.response_id)),
                                     "overrides": [as_dict(o) for o in overrides]}

    def history(self, *, examiner: str | None = None, part: str | None = None, candidate: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                limit: int | None = 500) -> list[dict[str, Any]]:
        """Graded responses, newest first, each with the override now in force (the newest; None if none), in one
        query. With `examiner`, only grades that examiner overrode, with their latest override."""
        latest = latest_overrides(Override.grade_id, where=(Override.examiner == examiner,) if examiner else ())
        o = aliased(Override, latest)
        query = (sa.select(Response, Grade, o).join(Grade, Grade.response_id == Response.id)
                 .join(o, sa.and_(o.grade_id == Grade.id, latest.c.rank == 1), isouter=examiner is None)
                 .order_by(Grade.created_at.desc(), Grade.id.desc()).limit(limit)
                 .options(*(sa.orm.defer(c) for c in (Grade.scores, Grade.gate_measures))))
        for column, value in ((Response.part, part), (Response.candidate_id, candidate)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(Grade.created_at >= since)
        if until is not None:
            query = query.where(Grade.created_at < until)
        with self._session() as session:
            return [history_row(*row) for row in session.execute(query)]

    def export_history_csv(self, path: str | Path, **filters: Any) -> int:
        """Write history() (all rows unless `limit` is given) as CSV; returns the number of rows."""
        return write_history_csv(self.history(**{"limit": None} | filters), path)

    def override_pairs(self) -> list[dict[str, Any]]:
        """(model score, examiner score) pairs for agreement analysis: each examiner's latest override of each
        scorable grade, with the model's headline soft and regression scores."""
        latest = latest_overrides(Override.grade_id, Override.examiner)
        query = (sa.select(Grade.id.label("grade_id"), Response.part, latest.c.examiner,
                           Grade.soft.label("model_soft"), Grade.regression.label("model_regression"),
                           latest.c.final_score, latest.c.agreement, latest.c.created_at)
                 .join(Grade, Grade.id == latest.c.grade_id).join(Response, Response.id == Grade.response_id)
                 .where(latest.c.rank == 1, Grade.scorable).order_by(latest.c.created_at, latest.c.id))
        with self._session() as session:
            return [dict(row) for row in session.execute(query).mappings()]


def override_record(grade_id: int, *, examiner: str, final_score: float, agreement: str, reason_code: str | None,
                    comment: str | None) -> dict[str, Any]:
    """A validated override as JSON-ready values, with its UUID and time fixed now, before any write attempt."""
    if agreement not in AGREEMENTS:
        raise ValueError(f"agreement must be one of {', '.join(AGREEMENTS)}, not {agreement!r}")
    if not math.isfinite(final_score):
        raise ValueError(f"final_score must be a finite number, not {final_score}")
    if not isinstance(examiner, str) or not examiner.strip():
        raise ValueError("examiner must be a non-empty name")
    for name, value, limit in (("examiner", examiner, 128), ("reason_code", reason_code, 64), ("comment", comment, 0)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name} must be text, not {type(value).__name__}")
        if limit and len(value) > limit:
            raise ValueError(f"{name} is longer than {limit} characters")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(f"{name} holds characters that are not valid Unicode text") from None
    return {"override_uuid": str(uuid.uuid4()), "grade_id": int(grade_id), "examiner": examiner,
            "final_score": float(final_score), "agreement": agreement, "reason_code": reason_code, "comment": comment,
            "created_at": utcnow().isoformat()}


def check_record(record: Any) -> None:
    """An outbox line must be what override_record makes. The error names the field at fault, never its value
    (an examiner's text), since it goes to the log."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    if missing := [f for f in RECORD_FIELDS if f not in record]:
        raise ValueError(f"no {', '.join(missing)}")
    if len(record) != len(RECORD_FIELDS):
        raise ValueError(f"{len(record) - len(RECORD_FIELDS)} unknown field(s)")
    checks = {"override_uuid": lambda v: str(uuid.UUID(v)) == v, "grade_id": lambda v: type(v) is int and v > 0,
              "created_at": lambda v: datetime.fromisoformat(v).tzinfo is not None}
    for name, valid in checks.items():
        try:
            ok = valid(record[name])
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise ValueError(f"invalid {name}")
    try:
        override_record(record["grade_id"], **{k: record[k] for k in RECORD_FIELDS[2:7]})
    except (TypeError, ValueError):
        raise ValueError("invalid examiner, final_score, agreement, reason_code or comment") from None


def _identity(path: Path) -> tuple[int, int] | None:
    """A file's (device, inode), from stat (which, unlike opening it, leaves SQLite's locks alone); None if absent."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def latest_overrides(*partition: sa.orm.InstrumentedAttribute[Any],
                     where: tuple[sa.ColumnElement[bool], ...] = ()) -> sa.Subquery:
    """Overrides ranked newest first (by decision time, then insertion) within each partition: rank 1 is in force."""
    rank = sa.func.row_number().over(partition_by=partition, order_by=(Override.created_at.desc(), Override.id.desc()))
    return sa.select(Override, rank.label("rank")).where(*where).subquery()


def as_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in sa.inspect(row).mapper.column_attrs}
