"""Storage on real SQLite files: round trips, append-only overrides, the schema migration, concurrent writer
processes, SIGKILL durability, and the outbox that keeps an override when the database refuses it."""

import csv
import ctypes
import json
import math
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (AGREEMENTS, Base, Database, DatabaseFull, DatabaseLocked, DatabaseReadOnly, DatabaseUnavailable,
                     Override, StorageError)
from storage.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]
SCORES = {"total": {"regression": 7.2, "soft": 7.4, "hard": 8.0, "probs": [0.1, 0.2, 0.7]},
          "fluency": {"regression": 6.1, "soft": 6.0, "hard": 6.0, "probs": [0.3, 0.4, 0.3]}}


def add_graded(db: Database, part: str | None = "2", candidate: str | None = "cand-1") -> int:
    response_id = db.add_response(audio_sha256="ab" * 32, duration_s=31.5, part=part, candidate_id=candidate,
                                  prompt_text="Describe a place you like.")
    return db.add_grade(response_id, checkpoint_id="whisper-base@abc123", scale_name="ielts", scores=SCORES,
                        scorable=True, gate_measures={"speech_s": 28.0}, latency_s=0.8)


def count_overrides(db: Database) -> int:
    with db.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(Override))


@pytest.fixture
def db(tmp_path):
    with Database.open(tmp_path / "grades.db") as db:
        yield db


def test_round_trip(db):
    grade_id = add_graded(db)
    db.set_evidence(grade_id, {"transcript": "I like the park.", "speech_rate_wps": 2.1})
    receipt = db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="partly",
                              reason_code="pronunciation", comment="Clear, but some vowels slip.")
    assert not receipt.queued and receipt.error is None

    grade = db.grade(grade_id)
    assert grade["scores"] == SCORES and grade["gate_measures"] == {"speech_s": 28.0} and grade["scorable"]
    assert (grade["headline"], grade["regression"], grade["soft"], grade["hard"]) == ("total", 7.2, 7.4, 8.0)
    assert grade["evidence"]["transcript"] == "I like the park."
    assert grade["response"]["part"] == "2" and grade["response"]["audio_path"] is None
    [override] = grade["overrides"]
    assert (override["id"], override["override_uuid"]) == (receipt.id, receipt.uuid)
    assert (override["examiner"], override["final_score"], override["agreement"], override["reason_code"]) == (
        "alice", 7.0, "partly", "pronunciation")
    assert override["created_at"].tzinfo is UTC and abs(datetime.now(UTC) - override["created_at"]) < timedelta(1)
    assert db.grade(grade_id + 1) is None


def test_non_scorable_grade(db):
    response_id = db.add_response(audio_sha256="00" * 32, duration_s=0.4)
    grade_id = db.add_grade(response_id, checkpoint_id="ck", scale_name="ielts", scores={}, scorable=False,
                            gate_reason="The recording is too short.", gate_measures={"duration_s": 0.4},
                            latency_s=0.01)
    [row] = db.history()
    assert row["grade_id"] == grade_id and not row["scorable"] and row["soft"] is None and row["override_id"] is None


def test_overrides_are_append_only_and_history_shows_the_latest(db, tmp_path):
    first, second = add_graded(db), add_graded(db, part="3", candidate="cand-2")
    old = db.add_override(first, examiner="alice", final_score=6.0, agreement="disagree")
    new = db.add_override(first, examiner="bob", final_score=7.5, agreement="agree")
    db.add_override(second, examiner="alice", final_score=5.0, agreement="partly")

    assert [o["id"] for o in db.grade(first)["overrides"]] == [old.id, new.id]  # both kept, oldest first
    history = db.history()
    assert [r["grade_id"] for r in history] == [second, first]  # newest grade first
    assert (history[1]["override_id"], history[1]["examiner"], history[1]["final_score"]) == (new.id, "bob", 7.5)
    assert history[1]["soft"] == 7.4  # the model's grade is untouched

    assert [(r["grade_id"], r["override_id"]) for r in db.history(examiner="alice")] == [
        (second, db.grade(second)["overrides"][0]["id"]), (first, old.id)]
    assert [r["grade_id"] for r in db.history(part="3")] == [second]
    assert [r["grade_id"] for r in db.history(candidate="cand-1")] == [first]
    assert db.history(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(db.history(until=datetime.now(UTC) + timedelta(hours=1), limit=1)) == 1

    pairs = db.override_pairs()  # each examiner's latest word on each grade
    assert sorted((p["grade_id"], p["examiner"], p["final_score"], p["model_soft"]) for p in pairs) == [
        (first, "alice", 6.0, 7.4), (first, "bob", 7.5, 7.4), (second, "alice", 5.0, 7.4)]

    assert db.export_history_csv(tmp_path / "history.csv") == 2
    with open(tmp_path / "history.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert (rows[1]["examiner"], rows[1]["final_score"], rows[0]["part"]) == ("bob", "7.5", "3")


def test_foreign_keys_and_invalid_input_are_refused(db):
    with pytest.raises(ValueError, match="FOREIGN KEY"):
        db.add_grade(12345, checkpoint_id="ck", scale_name="ielts", scores=SCORES, scorable=True, latency_s=0.1)
    with pytest.raises(ValueError, match="FOREIGN KEY"):
        db.add_override(12345, examiner="alice", final_score=7.0, agreement="agree")
    grade_id = add_graded(db)
    good = {"examiner": "alice", "final_score": 7.0, "agreement": "agree"}
    for bad in ({"agreement": "maybe"}, {"final_score": math.nan}, {"examiner": "  "}, {"examiner": "x" * 129},
                {"comment": "\udc00"}):
        with pytest.raises(ValueError):
            db.add_override(grade_id, **good | bad)
    assert count_overrides(db) == 0 and not db.outbox  # refused input is not queued either


def test_migration_matches_models_and_connections_are_configured(db):
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": 2}  # FULL
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version", "responses", "grades", "overrides"}


def write_overrides(url: str, n: int) -> list[tuple[str, int | None]]:
    with Database.open(url, synchronous="NORMAL") as db:
        grade_id = add_graded(db)
        return [(r.uuid, r.id) for r in (db.add_override(grade_id, examiner=f"examiner-{os.getpid()}",
                                                          final_score=i % 10, agreement="agree") for i in range(n))]


def test_concurrent_writer_processes(tmp_path):
    """8 processes open a new database at once (racing to create its tables), then make 1,000 single-insert commits
    each. synchronous=NORMAL keeps this quick: the locking is the same, FULL only adds an fsync per commit (measured
    in benchmarks/bench_storage.py)."""
    path = tmp_path / "grades.db"
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.starmap(write_overrides, [(str(path), 1000)] * 8)
    acknowledged = [r for worker in results for r in worker]
    assert all(id is not None for _, id in acknowledged)  # none had to be queued
    with Database.open(path) as db, db.engine.connect() as connection:
        stored = dict(connection.execute(sa.select(Override.override_uuid, Override.id)).all())
    assert len(stored) == len(acknowledged) == 8000 and stored == dict(acknowledged)


WRITER = """
import sys
from storage import Database
db = Database.open(sys.argv[1])
for i in range(100_000):
    receipt = db.add_override(int(sys.argv[2]), examiner="alice", final_score=i % 10, agreement="agree")
    print(receipt.uuid, receipt.id, flush=True)
"""


def test_acknowledged_overrides_survive_sigkill(tmp_path):
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        grade_id = add_graded(db)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(grade_id)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    acknowledged = [child.stdout.readline().split() for _ in range(300)]
    assert acknowledged[-1], "the writer stopped before it was killed"
    child.send_signal(signal.SIGKILL)  # while it is writing: between, or in the middle of, commits
    acknowledged += [line.split() for line in child.stdout]  # printed before the kill: acknowledged too
    child.wait()
    assert child.returncode == -signal.SIGKILL

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Database.open(path) as db, db.engine.connect() as connection:
        stored = dict(connection.execute(sa.select(Override.override_uuid, Override.id)).all())
    assert {uuid: int(id) for uuid, id in acknowledged} == {uuid: stored[uuid] for uuid, _ in acknowledged}


def lock(path: Path) -> sqlite3.Connection:
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return locker


@pytest.mark.parametrize("failure", ["locked", "read-only", "full"])
def test_refused_override_is_queued_then_stored_once(tmp_path, failure):
    """Locked: another connection holds BEGIN EXCLUSIVE against a 50-ms busy timeout. Read-only: the file opened
    read-only by SQLite (mode=ro; file permissions are tested below). Full: SQLite's own SQLITE_FULL, from a page
    limit, as a full disk gives it."""
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        grade_id = add_graded(db)
        db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="agree")
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if failure == "read-only" else str(path)
    db = Database.open(url, busy_timeout_s=0.05)
    if failure == "full":
        with db.engine.connect() as connection:
            pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
        sa.event.listen(db.engine, "connect", lambda c, _: c.execute(f"PRAGMA max_page_count = {pages}"))
        db.engine.dispose()
    locker = lock(path) if failure == "locked" else None

    receipt = db.add_override(grade_id, examiner="bob", final_score=6.0, agreement="partly",
                              comment="long pauses " * 400)  # bigger than a page: "full" needs new pages
    error = {"locked": DatabaseLocked, "read-only": DatabaseReadOnly, "full": DatabaseFull}[failure]
    assert receipt.queued and isinstance(receipt.error, error)
    assert str(receipt.error).endswith("your override was kept and will be retried")
    assert {"locked": "locked by another process", "read-only": "read-only", "full": "disk"}[failure] in str(
        receipt.error)
    [queued] = db.outbox.read()
    assert queued["override_uuid"] == receipt.uuid
    assert db.flush_outbox() == 0 and len(db.outbox.read()) == 1  # still refused: stays queued

    if locker:
        locker.rollback()
    db.close()
    with Database.open(path) as db:  # opening replays the outbox
        assert not db.outbox and db.flush_outbox() == 0
        assert [o["override_uuid"] for o in db.grade(grade_id)["overrides"]][1:] == [receipt.uuid]
        db.outbox.append(queued)  # as if a crash came between storing it and emptying the outbox
        assert db.flush_outbox() == 1 and count_overrides(db) == 2  # the replay found it stored: no duplicate


def test_override_is_not_acknowledged_when_it_cannot_be_queued(tmp_path):
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        grade_id = add_graded(db)
    db = Database.open(path, outbox=tmp_path / "missing" / "outbox.jsonl", busy_timeout_s=0.05)
    locker = lock(path)
    with pytest.raises(DatabaseLocked, match="your override was NOT saved, and could not be queued either"):
        db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="agree")
    locker.rollback()
    db.close()


def test_queued_override_for_a_missing_grade_stays_queued(tmp_path):
    path = tmp_path / "grades.db"
    with Database.open(path, busy_timeout_s=0.05) as db:
        grade_id = add_graded(db)
        locker = lock(path)
        assert db.add_override(grade_id + 99, examiner="alice", final_score=7.0, agreement="agree").queued
        locker.rollback()
        assert db.flush_outbox() == 0 and len(db.outbox.read()) == 1
        assert not db.add_override(grade_id, examiner="alice", final_score=7.0, agreement="agree").queued
        assert len(db.outbox.read()) == 1 and count_overrides(db) == 1


READ_ONLY_WRITER = """
import json, os, sys
from storage import Database, StorageError
result = {"writable": os.access(sys.argv[1], os.W_OK)}
try:
    db = Database.open(sys.argv[1], busy_timeout_s=0.05)
except StorageError as error:
    result["open_error"] = str(error)
else:
    receipt = db.add_override(int(sys.argv[2]), examiner="alice", final_score=7.0, agreement="agree")
    result |= {"queued": receipt.queued, "error": str(receipt.error)}
print(json.dumps(result))
"""


def held_to_permissions() -> None:
    """Runs in the writer before exec: root drops CAP_DAC_OVERRIDE (from its bounding set), so that it too is held
    to the file permissions."""
    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0):  # PR_CAPBSET_DROP, 1
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


@pytest.mark.parametrize("folder_writable", [True, False])
def test_read_only_file_permissions(tmp_path, folder_writable):
    """Real permissions: the database file chmod 0o444 (and its folder 0o555), written to by another process."""
    path = tmp_path / "db" / "grades.db"
    with Database.open(path) as db:
        grade_id = add_graded(db)
    path.chmod(0o444)
    path.parent.chmod(0o755 if folder_writable else 0o555)
    try:
        result = json.loads(subprocess.run([sys.executable, "-c", READ_ONLY_WRITER, str(path), str(grade_id)],
                                           cwd=REPO, capture_output=True, text=True, check=True,
                                           preexec_fn=held_to_permissions).stdout)
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    if result["writable"]:
        pytest.skip("this user can write a 0o444 file: file permissions cannot make the database read-only here")
    if folder_writable:  # SQLite opens the file read-only; the outbox goes beside it
        assert result["queued"] and "read-only" in result["error"] and "kept" in result["error"]
        with Database.open(path) as db:
            assert count_overrides(db) == 1 and not db.outbox
    else:  # a WAL database cannot even be read without creating its -shm file beside it
        assert "read-only" in result["open_error"]


def test_open_reads_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    with Database.open() as db:
        add_graded(db)
        assert db.outbox.path == tmp_path / "from-env.db.outbox.jsonl"
    assert (tmp_path / "from-env.db").is_file()


def test_open_errors_are_clear(tmp_path):
    with pytest.raises(DatabaseUnavailable, match="cannot be opened or reached .*unable to open database file"):
        Database.open(f"sqlite:///{tmp_path}/no/such/folder/grades.db")


def test_outbox_survives_a_torn_line(tmp_path):
    outbox = Outbox(tmp_path / "outbox.jsonl")
    outbox.path.write_text('{"override_uuid": "a"}\n{"override_uu')  # a crash in mid-append: never acknowledged
    outbox.append({"override_uuid": "b"})
    assert [r["override_uuid"] for r in outbox.read()] == ["a", "b"]
    outbox.remove({"a"})
    assert outbox.path.read_text() == '{"override_uuid": "b"}\n'
    outbox.remove({"b"})
    assert not outbox


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    with Database.open(tmp_path_factory.mktemp("hypothesis") / "grades.db") as db:
        yield db, add_graded(db)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(examiner=st.text(min_size=1, max_size=128).filter(str.strip),
       final_score=st.floats(allow_nan=False, allow_infinity=False),
       agreement=st.sampled_from(AGREEMENTS), reason_code=st.none() | st.text(max_size=64),
       comment=st.none() | st.text(max_size=2000))
def test_override_inputs_round_trip(shared_db, examiner, final_score, agreement, reason_code, comment):
    db, grade_id = shared_db
    receipt = db.add_override(grade_id, examiner=examiner, final_score=final_score, agreement=agreement,
                              reason_code=reason_code, comment=comment)
    [stored] = [o for o in db.grade(grade_id)["overrides"] if o["id"] == receipt.id]
    assert (stored["examiner"], stored["final_score"], stored["agreement"], stored["reason_code"],
            stored["comment"]) == (examiner, final_score, agreement, reason_code, comment)
    assert db.history(examiner=examiner)[0]["override_id"] == receipt.id


def test_storage_error_messages():
    assert str(DatabaseLocked("your override was kept and will be retried")) == (
        "the database is locked by another process; your override was kept and will be retried")
    assert issubclass(DatabaseFull, StorageError) and str(DatabaseUnavailable(detail="x")).endswith("(x)")
