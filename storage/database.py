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
import random
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
from .marking import Marking, sampled
from .models import (AGREEMENTS, MAX_CANDIDATE, MAX_EXAMINER, MAX_FILE_NAME, MAX_PART, MAX_REASON_CODE,
                     MAX_SESSION_NAME, PHASES, ROLES, SEEN, ExamSession, Grade, Override, Response, utcnow)
from .outbox import Outbox, outbox_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO / "data" / "grades.db"
log = logging.getLogger(__name__)
QUEUED = "your override was kept and will be retried"
RECORD_FIELDS = ("override_uuid", "grade_id", "examiner", "final_score", "agreement", "reason_code", "comment",
                 "created_at", "role", "phase", "model_seen", "seen")
# An outbox line written before marking phases holds only the first eight: a first mark, made with the model in view.
OLD_RECORD = {"role": "examiner", "phase": "first", "model_seen": True, "seen": None}


@dataclass(frozen=True)
class Receipt:
    """What became of an override: stored (`id` set, and the `phase` it was stored in), or queued in the outbox
    (`error` says why, for the UI; a phase left to storage is decided when it is stored)."""

    uuid: str
    id: int | None
    error: StorageError | None = None
    phase: str | None = None

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
                    "restore it from a backup before starting, or move the outbox away to start an empty database",
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

    def _add(self, row: ExamSession | Response | Grade | Override, fate: str) -> int:
        with self._session(write=True, fate=fate) as session:
            session.add(row)
            session.flush()
            return row.id

    def add_session(self, name: str, *, double_marking: float = 0.0, threshold: float | None = None,
                    candidates: list[str] | None = None) -> int:
        """Create an exam session; returns its id. `double_marking`: the share (0-1) of its responses that need a
        second marker (which ones: marking.sampled); `threshold`: marks further apart than this are adjudicated
        (None: one class step of the grade's scale, marking.default_threshold); `candidates`: the ids expected."""
        check_text("session name", name, MAX_SESSION_NAME)
        if not name.strip():
            raise ValueError("a session needs a name")
        if not (isinstance(double_marking, int | float) and 0 <= double_marking <= 1):
            raise ValueError(f"double_marking must be a share between 0 and 1, not {double_marking!r}")
        if threshold is not None and not (isinstance(threshold, int | float) and 0 <= threshold < math.inf):
            raise ValueError(f"threshold must be a score difference of 0 or more, not {threshold!r}")
        if candidates is not None:
            if isinstance(candidates, str):
                raise TypeError("candidates must be a list of candidate ids, not one string")
            for candidate in candidates:
                check_text("candidate id", candidate, MAX_CANDIDATE)
            candidates = list(dict.fromkeys(candidates))
        with self._session() as session:
            if session.scalar(sa.select(ExamSession.id).where(ExamSession.name == name)) is not None:
                raise ValueError(f"there is already a session named {name!r}")
        return self._add(ExamSession(name=name, double_marking=float(double_marking), threshold=threshold,
                                     candidates=candidates), "the session was not saved")

    def sessions(self) -> list[dict[str, Any]]:
        """Every exam session, newest first, each with how many responses it holds."""
        count = (sa.select(sa.func.count(Response.id)).where(Response.session_id == ExamSession.id)
                 .scalar_subquery())
        with self._session() as session:
            rows = session.execute(sa.select(ExamSession, count).order_by(ExamSession.created_at.desc(),
                                                                          ExamSession.id.desc()))
            return [as_dict(s) | {"responses": n} for s, n in rows]

    def add_response(self, *, audio_sha256: str, duration_s: float, part: str | None = None,
                     candidate_id: str | None = None, prompt_text: str | None = None,
                     audio_path: str | None = None, session_id: int | None = None,
                     file_name: str | None = None) -> int:
        """Store one recording's metadata (its audio only as a path, where retention keeps it), in an exam session
        if given, with the uploaded file's name; returns its id. Text longer than its column is refused here, alike
        on every backend."""
        for name, value, limit in (("task part", part, MAX_PART), ("candidate id", candidate_id, MAX_CANDIDATE),
                                   ("file name", file_name, MAX_FILE_NAME)):
            check_text(name, value, limit)
        return self._add(Response(audio_sha256=audio_sha256, duration_s=duration_s, part=part,
                                  candidate_id=candidate_id, prompt_text=prompt_text, audio_path=audio_path,
                                  session_id=session_id, file_name=file_name),
                         "the response was not saved")

    def add_grade(self, response_id: int, *, checkpoint_id: str, scale_name: str, scores: dict[str, dict[str, Any]],
                  scorable: bool, latency_s: float, headline: str | None = None, gate_reason: str | None = None,
                  gate_measures: dict[str, Any] | None = None, evidence: dict[str, Any] | None = None,
                  review: dict[str, Any] | None = None) -> int:
        """Store a model's grade of a response; returns its id. `scores` is {aspect: {"regression", "soft", "hard",
        "probs"}} (Prediction.to_dict()["scores"]); the headline aspect (default: the first) is also kept as columns.
        A non-scorable response gets a grade too, with empty scores and the gate's reason. `review`: the grader's
        review reasons and reference check ({"reasons": [{"code", "text"}], "reference": {...} | None})."""
        headline = headline or next(iter(scores), None)
        top = scores[headline] if headline else {}
        return self._add(Grade(response_id=response_id, checkpoint_id=checkpoint_id, scale_name=scale_name,
                               scores=scores, headline=headline, regression=top.get("regression"),
                               soft=top.get("soft"), hard=top.get("hard"), scorable=scorable, gate_reason=gate_reason,
                               gate_measures=gate_measures or {}, evidence=evidence, review=review,
                               latency_s=latency_s),
                         "the grade was not saved")

    def set_evidence(self, grade_id: int, evidence: dict[str, Any]) -> None:
        """Attach the evidence (transcript, fluency measures), which is computed after the grade is shown. The
        grade's scores are not touched."""
        with self._session(write=True, fate="the evidence was not saved") as session:
            grade = session.get(Grade, grade_id)
            if grade is None:
                raise ValueError(f"no grade {grade_id}")
            grade.evidence = evidence

    def add_override(self, grade_id: int, *, examiner: str, final_score: float, agreement: str | None,
                     reason_code: str | None = None, comment: str | None = None, role: str = "examiner",
                     phase: str | None = None, model_seen: bool | None = None,
                     seen: list[str] | None = None) -> Receipt:
        """Record an examiner's mark of a grade, as a new row (append-only). Committed before it returns; if the
        database cannot take it, it is queued in the outbox (fsync'd) and the receipt says so. Raises ValueError (or
        TypeError) for invalid input, and StorageError only when the mark could be neither stored nor queued.

        `role`: the examiner's (from the auth file). `phase`: the one review() offered, stored as given (a mark
        entered as a second mark stays one, even if another second mark arrived first), refused where it breaks
        independence (marking.Marking.check); None: decided when stored, from the marks then stored
        (Marking.phase_for). `seen`: what was on screen before the mark (models.SEEN), in the order shown;
        `model_seen` defaults to whether "model" is in it (True when neither is given). `agreement` (with the
        model) is None where the model was not seen."""
        record = override_record(grade_id, examiner=examiner, final_score=final_score, agreement=agreement,
                                 reason_code=reason_code, comment=comment, role=role, phase=phase,
                                 model_seen=model_seen, seen=seen)
        try:
            id, phase = self._store_override(record, check=True)
            receipt = Receipt(record["override_uuid"], id, phase=phase)
        except StorageError as error:
            if self.outbox is None:
                raise type(error)("your override was NOT saved: please try again") from error
            try:
                self.outbox.append(record)
            except OSError as outbox_error:
                raise type(error)(f"your override was NOT saved, and could not be queued either ({outbox_error}): "
                                  "please try again") from outbox_error
            return Receipt(record["override_uuid"], None, error, record["phase"])
        if self.outbox:
            try:
                self.flush_outbox()  # the database takes writes again: send what waited
            except Exception as flush_error:  # this override is stored: say so, whatever became of the others
                log.warning("outbox not flushed after override %s: %s", receipt.uuid, type(flush_error).__name__)
        return receipt

    def _store_override(self, record: dict[str, Any], check: bool = False) -> tuple[int, str]:
        """Insert a validated override record, deciding its phase if it has none; returns its id and phase, also
        when it was stored before (a replay). `check`: refuse a given phase that breaks independence (a live mark;
        a replay is stored as it was made). The marks are read before the write lock is taken (holding it longer
        starves other writers), and the decision stands only if no mark of the grade came in meanwhile, checked
        under the lock: SQLite's writers take turns; on PostgreSQL the grade's row is locked (FOR UPDATE), so two
        marks of one grade saved at the same instant are decided one after the other (a first and a second mark,
        not two first marks)."""
        row = Override(**OLD_RECORD | record | {"created_at": datetime.fromisoformat(record["created_at"])})
        decide = row.phase is None or check
        try:
            if decide:
                with self._session(fate=QUEUED) as session:  # the last mark first: on PostgreSQL each statement
                    last = session.scalar(LAST_MARK, {"grade_id": row.grade_id})  # sees the newest commits
                    marking = self._marking(session, row.grade_id)
            with self._session(write=True, fate=QUEUED) as session:
                if decide:
                    session.execute(LOCK_GRADE, {"grade_id": row.grade_id})  # SQLite: no-op, it has one writer
                    if session.scalar(LAST_MARK, {"grade_id": row.grade_id}) != last:  # another mark came in
                        marking = self._marking(session, row.grade_id)
                    row.phase = row.phase or marking.phase_for(row.examiner, row.role)
                    if check:
                        marking.check(row.examiner, row.role, row.phase)
                session.add(row)
                session.flush()
                return row.id, row.phase
        except ValueError:
            with self._session() as session:
                stored = session.execute(sa.select(Override.id, Override.phase)
                                         .where(Override.override_uuid == row.override_uuid)).first()
            if stored is None:
                raise
            return tuple(stored)

    def _marking(self, session: Session, grade_id: int) -> Marking:
        """A grade's marking state (its marks, its session's sample and threshold); ValueError for no grade. Read
        for every mark stored, so two statements built once (MARKING_GRADE, MARKING_MARKS)."""
        row = session.execute(MARKING_GRADE, {"grade_id": grade_id}).first()
        if row is None:
            raise ValueError(f"no grade {grade_id}")
        marks = [dict(m) for m in session.execute(MARKING_MARKS, {"grade_id": grade_id}).mappings()]
        return marking_of(row.scale_name, row.response_id, row, marks)

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

    def work_queue(self, examiner: str, role: str = "examiner", *, session_id: int | None = None,
                   candidate: str | None = None, part: str | None = None, phase: str | None = None,
                   shuffle_seed: int | None = None) -> list[dict[str, Any]]:
        """The responses awaiting this examiner's mark (marking.Marking.awaited: first marks nobody has given,
        second marks their session's sample needs, never from the first marker; for adjudicators and admins also
        the disagreements to adjudicate), oldest first, or shuffled by `shuffle_seed` (the same seed, the same
        order). Each row: grade_id, response_id, file_name, candidate_id, part, session_id, session, scorable,
        graded_at and the phase awaited. Filters: a session, a candidate, a task part, a phase."""
        check_role(role)
        where = [column == value for column, value in ((Response.session_id, session_id),
                                                      (Response.candidate_id, candidate), (Response.part, part))
                 if value is not None]
        grades = (sa.select(Grade, Response, ExamSession).join(Response, Response.id == Grade.response_id)
                  .outerjoin(ExamSession, ExamSession.id == Response.session_id).where(*where)
                  .order_by(Grade.created_at, Grade.id)
                  .options(*(sa.orm.defer(c) for c in (Grade.scores, Grade.gate_measures, Grade.evidence))))
        with self._session() as session:
            by_grade = marks_by_grade(session, where)
            queue = []
            for grade, response, exam in session.execute(grades):
                awaited = marking_of(grade.scale_name, response.id, exam, by_grade.get(grade.id, [])).awaited(
                    examiner, role)
                if awaited and phase in (None, awaited):
                    queue.append({"grade_id": grade.id, "response_id": response.id, "file_name": response.file_name,
                                  "candidate_id": response.candidate_id, "part": response.part,
                                  "session_id": response.session_id, "session": exam and exam.name,
                                  "scorable": grade.scorable, "graded_at": grade.created_at, "phase": awaited})
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(queue)
        return queue

    def review(self, grade_id: int, *, examiner: str, role: str = "examiner",
               blind: bool = False) -> dict[str, Any] | None:
        """What this examiner, in this role, may see of a grade before marking it (None: no such grade): `grade`
        (scores and evidence emptied while `model_visible` is false: under `blind` marking until they have marked,
        marking.Marking.model_visible), `response`, `session`, the `marks` they may see (Marking.visible; how many
        are hidden: `hidden_marks`), the `phase` their mark would be in, `awaited` (the phase in which their mark
        is awaited, or None), and the `final` mark (final_mark) when they may see every mark, else None."""
        check_role(role)
        with self._session() as session:
            grade = session.get(Grade, grade_id)
            if grade is None:
                return None
            response = session.get_one(Response, grade.response_id)
            exam = session.get(ExamSession, response.session_id) if response.session_id else None
            marks = [as_dict(m) for m in session.scalars(sa.select(Override).where(Override.grade_id == grade_id)
                                                         .order_by(Override.created_at, Override.id))]
            shown = as_dict(grade)
        marking = marking_of(grade.scale_name, response.id, exam, marks)
        model_visible = marking.model_visible(examiner, role, blind)
        if not model_visible:
            shown |= {"scores": {}, "regression": None, "soft": None, "hard": None, "evidence": None}
        visible = marking.visible(examiner, role)
        return {"grade": shown, "response": as_dict(response), "session": exam and as_dict(exam),
                "model_visible": model_visible, "marks": visible, "hidden_marks": len(marks) - len(visible),
                "phase": marking.phase_for(examiner, role), "awaited": marking.awaited(examiner, role),
                "final": marking.final() if len(visible) == len(marks) else None}

    def marked(self, scale_name: str | None = None, *, session_id: int | None = None) -> list[dict[str, Any]]:
        """Every grade with at least one mark (for storage.agreement), oldest first: grade_id, response_id,
        session_id, scale_name, scorable, the model's headline regression, soft and hard scores, `review_codes`
        (the grader's review reasons; None where not recorded), `marks` (every mark, oldest first) and `final`
        (final_mark). Filters: a scale, a session."""
        where = [column == value for column, value in ((Grade.scale_name, scale_name),
                                                      (Response.session_id, session_id)) if value is not None]
        grades = (sa.select(Grade, Response, ExamSession).join(Response, Response.id == Grade.response_id)
                  .outerjoin(ExamSession, ExamSession.id == Response.session_id)
                  .where(*where, sa.exists().where(Override.grade_id == Grade.id))
                  .order_by(Grade.created_at, Grade.id)
                  .options(*(sa.orm.defer(c) for c in (Grade.scores, Grade.gate_measures, Grade.evidence))))
        with self._session() as session:
            by_grade = marks_by_grade(session, where)
            return [{"grade_id": grade.id, "response_id": response.id, "session_id": response.session_id,
                     "scale_name": grade.scale_name, "scorable": grade.scorable, "regression": grade.regression,
                     "soft": grade.soft, "hard": grade.hard, "marks": by_grade[grade.id],
                     "review_codes": None if grade.review is None else [r["code"] for r in grade.review["reasons"]],
                     "final": marking_of(grade.scale_name, response.id, exam, by_grade[grade.id]).final()}
                    for grade, response, exam in session.execute(grades)]

    def final_mark(self, grade_id: int) -> dict[str, Any]:
        """The mark in force on a grade, by the rule in storage.marking: {"score" (None: unmarked or awaiting
        adjudication), "status", "marks" (the ids the score rests on)}. ValueError for no such grade."""
        with self._session() as session:
            return self._marking(session, grade_id).final()

    def final_marks(self, grade_ids: list[int]) -> dict[int, dict[str, Any]]:
        """final_mark of many grades in two queries, whatever their number (History's rows); grades not found are
        left out."""
        if not grade_ids:
            return {}
        with self._session() as session:
            by_grade = marks_by_grade(session, [Grade.id.in_(grade_ids)])
            return {row.grade_id: marking_of(row.scale_name, row.response_id, row,
                                             by_grade.get(row.grade_id, [])).final()
                    for row in session.execute(MARKING_GRADES.where(Grade.id.in_(grade_ids)))}

    def history(self, *, examiner: str | None = None, part: str | None = None, candidate: str | None = None,
                session_id: int | None = None, since: datetime | None = None, until: datetime | None = None,
                limit: int | None = 500) -> list[dict[str, Any]]:
        """Graded responses, newest first, each with the override now in force (the newest; None if none), in one
        query. With `examiner`, only grades that examiner overrode, with their latest override; with `session_id`,
        one exam session's."""
        latest = latest_overrides(Override.grade_id, where=(Override.examiner == examiner,) if examiner else ())
        o = aliased(Override, latest)
        query = (sa.select(Response, Grade, o).join(Grade, Grade.response_id == Response.id)
                 .join(o, sa.and_(o.grade_id == Grade.id, latest.c.rank == 1), isouter=examiner is None)
                 .order_by(Grade.created_at.desc(), Grade.id.desc()).limit(limit)
                 .options(sa.orm.defer(Grade.gate_measures)))  # scores: every aspect's go into the history rows
        for column, value in ((Response.part, part), (Response.candidate_id, candidate),
                              (Response.session_id, session_id)):
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


def override_record(grade_id: int, *, examiner: str, final_score: float, agreement: str | None,
                    reason_code: str | None, comment: str | None, role: str = "examiner", phase: str | None = None,
                    model_seen: bool | None = None, seen: list[str] | None = None) -> dict[str, Any]:
    """A validated override as JSON-ready values, with its UUID and time fixed now, before any write attempt."""
    if agreement not in (None, *AGREEMENTS):
        raise ValueError(f"agreement must be one of {', '.join(AGREEMENTS)} or none, not {agreement!r}")
    if not math.isfinite(final_score):
        raise ValueError(f"final_score must be a finite number, not {final_score}")
    if not isinstance(examiner, str) or not examiner.strip():
        raise ValueError("examiner must be a non-empty name")
    for name, value, limit in (("examiner", examiner, MAX_EXAMINER), ("reason_code", reason_code, MAX_REASON_CODE),
                               ("comment", comment, None)):
        check_text(name, value, limit)
    check_role(role)
    if phase not in (None, *PHASES):
        raise ValueError(f"phase must be one of {', '.join(PHASES)} or none, not {phase!r}")
    if seen is not None:
        if not isinstance(seen, list | tuple) or not set(seen) <= set(SEEN) or len(set(seen)) != len(seen):
            raise ValueError(f"seen must list, in order and once each, some of {', '.join(SEEN)}")
        if model_seen is not None and model_seen != ("model" in seen):
            raise ValueError("model_seen must say whether 'model' is in seen")
        model_seen = "model" in seen
    if model_seen is None:
        model_seen = True
    if type(model_seen) is not bool:
        raise TypeError(f"model_seen must be true or false, not {model_seen!r}")
    if agreement is not None and not model_seen:
        raise ValueError("an agreement with the model needs the model seen: leave it out of a blind mark")
    return {"override_uuid": str(uuid.uuid4()), "grade_id": int(grade_id), "examiner": examiner,
            "final_score": float(final_score), "agreement": agreement, "reason_code": reason_code, "comment": comment,
            "created_at": utcnow().isoformat(), "role": role, "phase": phase, "model_seen": model_seen,
            "seen": None if seen is None else list(seen)}


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def check_text(name: str, value: str | None, limit: int | None) -> None:
    """Text for a column: None, or a str of at most `limit` characters (None: any length) that encodes as UTF-8."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be text, not {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"the {name} is {len(value):,} characters long; at most {limit:,} are kept")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name} holds characters that are not valid Unicode text") from None


def marking_of(scale_name: str, response_id: int, session: Any, marks: list[dict[str, Any]]) -> Marking:
    """The marking state of a grade from its scale, response, session (an ExamSession, a row of its id,
    double_marking and threshold, or None) and marks (oldest first)."""
    double = bool(session and session.double_marking and sampled(session.id, response_id, session.double_marking))
    return Marking(marks, double, session and session.threshold, scale_name)


def check_record(record: Any) -> None:
    """An outbox line must be what override_record makes. The error names the field at fault, never its value
    (an examiner's text), since it goes to the log."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    if missing := [f for f in RECORD_FIELDS if f not in record and f not in OLD_RECORD]:
        raise ValueError(f"no {', '.join(missing)}")
    if unknown := set(record) - set(RECORD_FIELDS):
        raise ValueError(f"{len(unknown)} unknown field(s)")
    if set(OLD_RECORD) & set(record) and not set(OLD_RECORD) <= set(record):
        raise ValueError(f"no {', '.join(sorted(set(OLD_RECORD) - set(record)))}")
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
        override_record(record["grade_id"], **{k: record[k] for k in RECORD_FIELDS[2:7]},
                        **{k: record[k] for k in OLD_RECORD if k in record})
    except (TypeError, ValueError):
        raise ValueError("invalid examiner, final_score, agreement, reason_code, comment, role, phase, model_seen "
                         "or seen") from None


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


def marks_by_grade(session: Session, where: list[Any]) -> dict[int, list[dict[str, Any]]]:
    """{grade id: its marks, oldest first} for the responses `where` selects, in one query."""
    marks = (sa.select(Override).join(Grade, Grade.id == Override.grade_id)
             .join(Response, Response.id == Grade.response_id).where(*where)
             .order_by(Override.created_at, Override.id))
    by_grade: dict[int, list[dict[str, Any]]] = {}
    for mark in session.scalars(marks):
        by_grade.setdefault(mark.grade_id, []).append(as_dict(mark))
    return by_grade


def as_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in sa.inspect(row).mapper.column_attrs}


# A grade's scale, response and session (its columns None outside a session), and each examiner's newest mark in
# each phase: all the marking rules read (who marked in which phase, the mark in force), a handful of rows however
# often one grade was marked.
MARKING_GRADES = (sa.select(Grade.id.label("grade_id"), Grade.scale_name, Response.id.label("response_id"),
                            ExamSession.id, ExamSession.double_marking, ExamSession.threshold)
                  .join(Response, Response.id == Grade.response_id)
                  .outerjoin(ExamSession, ExamSession.id == Response.session_id))
MARKING_GRADE = MARKING_GRADES.where(Grade.id == sa.bindparam("grade_id"))
_ranked = latest_overrides(Override.examiner, Override.phase, where=(Override.grade_id == sa.bindparam("grade_id"),))
LOCK_GRADE = sa.select(Grade.id).where(Grade.id == sa.bindparam("grade_id")).with_for_update()
LAST_MARK = sa.select(sa.func.max(Override.id)).where(Override.grade_id == sa.bindparam("grade_id"))
MARKING_MARKS = (sa.select(*(_ranked.c[k] for k in ("id", "examiner", "phase", "role", "final_score", "created_at")))
                 .where(_ranked.c.rank == 1).order_by(_ranked.c.created_at, _ranked.c.id))
