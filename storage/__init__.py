"""Storage of responses, model grades and examiner overrides (SQLAlchemy 2, migrated with Alembic).

    db = Database.open("sqlite:///data/grades.db")
    response_id = db.add_response(audio_sha256=..., duration_s=...)
    grade_id = db.add_grade(response_id, checkpoint_id=..., scale_name=..., scores=..., scorable=True, latency_s=...)
    receipt = db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="partly")
    if receipt.queued: show(str(receipt.error))  # "the database is locked ...; your override was kept ..."
"""

from .database import Database, Receipt
from .errors import (DatabaseCorrupt, DatabaseFull, DatabaseGone, DatabaseLocked, DatabaseReadOnly,
                     DatabaseUnavailable, StorageError)
from .models import AGREEMENTS, Base, Grade, Override, Response
from .outbox import outbox_path

__all__ = ["AGREEMENTS", "Base", "Database", "DatabaseCorrupt", "DatabaseFull", "DatabaseGone", "DatabaseLocked",
           "DatabaseReadOnly", "DatabaseUnavailable", "Grade", "Override", "Receipt", "Response", "StorageError",
           "outbox_path"]
