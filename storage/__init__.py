"""Storage of responses, model grades and examiner overrides (SQLAlchemy 2, migrated with Alembic).

    db = Database.open("sqlite:///data/grades.db")
    response_id = db.add_response(audio_sha256=..., duration_s=...)
    grade_id = db.add_grade(response_id, checkpoint_id=..., scale_name=..., scores=..., scorable=True, latency_s=...)
    receipt = db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="partly")
    if receipt.queued: show(str(receipt.error))  # "the database is locked ...; your override was kept ..."

Marking (storage.marking has the rules): exam sessions double-mark a share of their responses, and marks carry a
role and a phase (first, second, adjudication):

    session_id = db.add_session("May 2026", double_marking=0.2)
    db.add_response(..., session_id=session_id, file_name="cand-1.flac")
    db.work_queue("alice", "examiner", session_id=session_id)  # what awaits alice's mark, and in which phase
    view = db.review(grade_id, examiner="bob", role="examiner", blind=True)  # what bob may see before marking
    db.add_override(grade_id, examiner="bob", final_score=6.0, agreement=None, phase=view["phase"],
                    seen=["audio"])
    db.final_mark(grade_id)  # {"score", "status", "marks"}

Agreement (storage.agreement, over db.marked()): examiners against the model and each other, mark distributions,
weekly drift, as tables with plain headers and CSV-ready rows.
"""

from .database import Database, Receipt
from .errors import (DatabaseCorrupt, DatabaseFull, DatabaseGone, DatabaseLocked, DatabaseReadOnly,
                     DatabaseUnavailable, StorageError)
from .models import AGREEMENTS, PHASES, ROLES, SEEN, Base, ExamSession, Grade, Override, Response
from .outbox import outbox_path

__all__ = ["AGREEMENTS", "PHASES", "ROLES", "SEEN", "Base", "Database", "DatabaseCorrupt", "DatabaseFull",
           "DatabaseGone", "DatabaseLocked", "DatabaseReadOnly", "DatabaseUnavailable", "ExamSession", "Grade",
           "Override", "Receipt", "Response", "StorageError", "outbox_path"]
