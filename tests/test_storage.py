"""Storage on real SQLite files: round trips, append-only overrides, the schema migration, concurrent writer
processes, SIGKILL durability, and the outbox that keeps an override when the database refuses it."""

import csv
import ctypes
import json
import math
import multiprocessing
import os
import pickle
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
from storage.database import override_record
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
def db(backend_url):
    """An empty database, on SQLite and on PostgreSQL (conftest.backend_url: skipped without a server)."""
    with Database.open(backend_url) as db:
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

    marked = db.marked()  # what the agreement tables read: every mark of every marked grade, and the model's
    assert [(g["grade_id"], g["soft"], [(m["examiner"], m["final_score"]) for m in g["marks"]]) for g in marked] == [
        (first, 7.4, [("alice", 6.0), ("bob", 7.5)]), (second, 7.4, [("alice", 5.0)])]
    assert marked[0]["final"] == {"score": 7.5, "status": "marked", "marks": [new.id]}

    assert db.export_history_csv(tmp_path / "history.csv") == 2
    with open(tmp_path / "history.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert (rows[1]["examiner"], rows[1]["final_score"], rows[0]["part"]) == ("bob", "7.5", "3")


def test_foreign_keys_and_invalid_input_are_refused(db):
    with pytest.raises(ValueError, match="(?i)foreign key"):
        db.add_grade(12345, checkpoint_id="ck", scale_name="ielts", scores=SCORES, scorable=True, latency_s=0.1)
    with pytest.raises(ValueError, match="no grade 12345"):
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
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version", "sessions", "responses", "grades",
                                                                 "overrides"}
        if db.engine.dialect.name != "sqlite":
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "10s"  # the busy timeout
            return
        pragmas = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
        assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10000, "synchronous": 2}  # FULL


def write_overrides(url: str, n: int) -> list[tuple[str, int | None, str | None]]:
    with Database.open(url, synchronous="NORMAL") as db:
        grade_id = add_graded(db)
        receipts = [db.add_override(grade_id, examiner=f"examiner-{os.getpid()}", final_score=i % 10,
                                    agreement="agree") for i in range(n)]
        return [(r.uuid, r.id, r.error and str(r.error)) for r in receipts]


def test_concurrent_writer_processes(backend_url):
    """8 processes (8 app instances) open a new database at once (racing to create its tables: SQLite's write lock,
    or PostgreSQL's advisory lock, lets one migrate), then make 1,000 single-insert commits each. On SQLite
    synchronous=NORMAL keeps this quick: the locking is the same, FULL only adds an fsync per commit (measured in
    benchmarks/bench_storage.py)."""
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.starmap(write_overrides, [(backend_url, 1000)] * 8)
    acknowledged = [(uuid, id) for worker in results for uuid, id, _ in worker]
    assert [error for worker in results for _, _, error in worker if error] == []  # none had to be queued
    with Database.open(backend_url) as db, db.engine.connect() as connection:
        stored = dict(connection.execute(sa.select(Override.override_uuid, Override.id)).all())
    assert len(stored) == len(acknowledged) == 8000 and stored == dict(acknowledged)


def mark_each(url: str, grade_ids: list[int], examiner: str, barrier) -> None:
    with Database.open(url) as db:
        for grade_id in grade_ids:
            barrier.wait()  # both examiners save this grade's mark at the same instant
            db.add_override(grade_id, examiner=examiner, final_score=5.0, agreement=None, seen=["audio"])


def test_two_marks_saved_at_once_are_a_first_and_a_second(backend_url):
    """Two app instances save two examiners' marks of the same double-marked grade at the same instant, 30 times:
    each grade gets one first and one second mark (the phases are decided one after the other), never two first
    marks with the second still awaited."""
    with Database.open(backend_url) as db:
        session = db.add_session("double", double_marking=1.0)
        grades = [db.add_grade(db.add_response(audio_sha256="ab" * 32, duration_s=2.0, session_id=session),
                               checkpoint_id="ck", scale_name="speechocean762", scores={}, scorable=True,
                               latency_s=0.1) for _ in range(30)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=mark_each, args=(backend_url, grades, examiner, barrier))
               for examiner in ("alice", "bob")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with Database.open(backend_url) as db:
        phases = [sorted(m["phase"] for m in db.grade(g)["overrides"]) for g in grades]
        assert phases == [["first", "second"]] * len(grades)
        assert {db.final_mark(g)["status"] for g in grades} == {"agreed"}


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
    if failure == "full":  # no free pages (the migrations' table copies leave some): a new row needs new ones
        sqlite3.connect(path, isolation_level=None).execute("VACUUM").connection.close()
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
    """A live mark of a grade that does not exist is refused at once (the marks are read before the write lock, and
    WAL readers pass a writer's lock); one queued for a grade the database no longer has stays queued."""
    path = tmp_path / "grades.db"
    with Database.open(path, busy_timeout_s=0.05) as db:
        grade_id = add_graded(db)
        locker = lock(path)
        with pytest.raises(ValueError, match=f"no grade {grade_id + 99}"):
            db.add_override(grade_id + 99, examiner="alice", final_score=7.0, agreement="agree")
        locker.rollback()
        db.outbox.append(override_record(grade_id + 99, examiner="alice", final_score=7.0, agreement="agree",
                                         reason_code=None, comment=None))
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
    error = DatabaseUnavailable("kept", detail="x")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # as a worker process sends it back


# ---- marking: sessions, phases, work queue, review, final mark ----------------------------------------------------

def add_response_graded(db: Database, session_id: int | None = None, candidate: str = "cand-1",
                        file_name: str | None = None, scorable: bool = True) -> int:
    response_id = db.add_response(audio_sha256="cd" * 32, duration_s=4.0, part="read", candidate_id=candidate,
                                  session_id=session_id, file_name=file_name)
    return db.add_grade(response_id, checkpoint_id="ck", scale_name="speechocean762",
                        scores=SCORES if scorable else {}, scorable=scorable, latency_s=0.1)


def test_sessions_and_response_fields(db):
    may = db.add_session("May 2026", double_marking=0.25, candidates=["c1", "c2", "c1"])
    june = db.add_session("June 2026", threshold=2.0)
    for bad in ({"name": "May 2026"}, {"name": " "}, {"name": "x" * 129}, {"name": "s", "double_marking": 1.5},
                {"name": "s", "double_marking": math.nan}, {"name": "s", "threshold": -1},
                {"name": "s", "candidates": "c1"}):
        with pytest.raises((ValueError, TypeError)):
            db.add_session(**bad)
    a = add_response_graded(db, may, "c1", "c1-part1.flac")
    add_response_graded(db, may, "c2", "c2-part1.flac")
    add_response_graded(db)
    sessions = {s["name"]: s for s in db.sessions()}
    assert [s["name"] for s in db.sessions()] == ["June 2026", "May 2026"]  # newest first
    assert (sessions["May 2026"]["id"], sessions["May 2026"]["double_marking"], sessions["May 2026"]["threshold"],
            sessions["May 2026"]["candidates"], sessions["May 2026"]["responses"]) == (may, 0.25, None, ["c1", "c2"], 2)
    assert (sessions["June 2026"]["id"], sessions["June 2026"]["threshold"], sessions["June 2026"]["responses"]) == (
        june, 2.0, 0)
    assert db.grade(a)["response"]["file_name"] == "c1-part1.flac" and db.grade(a)["response"]["session_id"] == may
    assert [r["candidate_id"] for r in db.history(session_id=may)] == ["c2", "c1"]
    # The columns' widths are the limits: a 64-character task part is kept, a 65-character one refused, alike on
    # every backend (PostgreSQL would refuse it at the column, SQLite would not).
    db.add_response(audio_sha256="ef" * 32, duration_s=1.0, part="p" * 64)
    for field, limit in (("part", 64), ("candidate_id", 128), ("file_name", 255)):
        with pytest.raises(ValueError, match=f"characters long; at most {limit} are kept"):
            db.add_response(audio_sha256="ef" * 32, duration_s=1.0, **{field: "x" * (limit + 1)})


def test_double_marking_sample_is_deterministic():
    from storage.marking import sampled

    taken = [sampled(7, response, 0.3) for response in range(4000)]
    assert taken == [sampled(7, response, 0.3) for response in range(4000)]  # every instance, every time
    assert 0.27 < sum(taken) / len(taken) < 0.33
    assert taken != [sampled(8, response, 0.3) for response in range(4000)]  # another session, another sample
    assert not any(sampled(7, r, 0.0) for r in range(500)) and all(sampled(7, r, 1.0) for r in range(500))


def test_double_marking_and_adjudication(db):
    session = db.add_session("May", double_marking=1.0)  # every response double-marked; threshold: one class step
    g1, g2, g3 = (add_response_graded(db, session, f"c{i}", f"c{i}.flac") for i in (1, 2, 3))
    queue = db.work_queue("alice", "examiner", session_id=session)
    assert [(r["grade_id"], r["phase"], r["file_name"], r["session"]) for r in queue] == [
        (g1, "first", "c1.flac", "May"), (g2, "first", "c2.flac", "May"), (g3, "first", "c3.flac", "May")]

    first = db.add_override(g1, examiner="alice", final_score=6.0, agreement="partly")  # phase decided: first
    assert first.phase == "first" and db.final_mark(g1) == {"score": 6.0, "status": "awaiting second mark",
                                                           "marks": [first.id]}
    assert [r["grade_id"] for r in db.work_queue("alice", "examiner")] == [g2, g3]  # never her own second marker
    assert [(r["grade_id"], r["phase"]) for r in db.work_queue("bob", "examiner")] == [
        (g1, "second"), (g2, "first"), (g3, "first")]

    view = db.review(g1, examiner="bob", role="examiner", blind=True)  # the second marker sees neither
    assert (view["phase"], view["awaited"], view["marks"], view["hidden_marks"], view["final"]) == (
        "second", "second", [], 1, None)
    assert not view["model_visible"] and view["grade"]["scores"] == {} and view["grade"]["soft"] is None
    assert db.review(g1, examiner="bob", role="examiner")["model_visible"]  # not blind: the UI shows the model
    with pytest.raises(ValueError, match="agreement with the model needs the model seen"):
        db.add_override(g1, examiner="bob", final_score=8.0, agreement="agree", seen=["audio"])
    second = db.add_override(g1, examiner="bob", final_score=8.0, agreement=None, phase=view["phase"],
                             seen=["audio"])
    assert db.review(g1, examiner="bob", role="examiner", blind=True)["model_visible"]  # revealed once marked
    [stored] = [m for m in db.grade(g1)["overrides"] if m["id"] == second.id]
    assert (stored["phase"], stored["role"], stored["model_seen"], stored["seen"], stored["agreement"]) == (
        "second", "examiner", False, ["audio"], None)

    # 6 and 8 are two classes apart: adjudication, by an adjudicator who gave neither mark
    assert db.final_mark(g1) == {"score": None, "status": "awaiting adjudication", "marks": []}
    assert db.work_queue("bob", "examiner", phase="adjudication") == []
    assert [(r["grade_id"], r["phase"]) for r in db.work_queue("carol", "adjudicator", phase="adjudication")] == [
        (g1, "adjudication")]
    assert db.work_queue("alice", "admin", phase="adjudication") == []  # she gave the first mark
    with pytest.raises(ValueError, match="only an adjudicator or admin adjudicates"):
        db.add_override(g1, examiner="dave", final_score=7.0, agreement="agree", phase="adjudication")
    staff_view = db.review(g1, examiner="carol", role="adjudicator", blind=True)
    assert staff_view["model_visible"] and len(staff_view["marks"]) == 2 and staff_view["phase"] == "adjudication"
    assert staff_view["final"]["status"] == "awaiting adjudication"
    adjudicated = db.add_override(g1, examiner="carol", final_score=7.0, agreement="agree", role="adjudicator")
    assert adjudicated.phase == "adjudication"
    assert db.final_mark(g1) == {"score": 7.0, "status": "adjudicated", "marks": [adjudicated.id]}
    assert db.work_queue("carol", "adjudicator", phase="adjudication") == []
    assert len(db.review(g1, examiner="bob", role="examiner")["marks"]) == 3  # all done: every mark shown

    # one class step apart: agreed, the mean of the two is final
    a = db.add_override(g2, examiner="alice", final_score=6.0, agreement="agree")
    with pytest.raises(ValueError, match="already marked this response in another phase"):
        db.add_override(g2, examiner="alice", final_score=6.0, agreement="agree", phase="second")
    b = db.add_override(g2, examiner="bob", final_score=7.0, agreement="agree")
    assert b.phase == "second" and db.final_mark(g2) == {"score": 6.5, "status": "agreed", "marks": [a.id, b.id]}
    correction = db.add_override(g2, examiner="bob", final_score=8.0, agreement="agree")  # stays a second mark
    assert correction.phase == "second" and db.final_mark(g2)["status"] == "awaiting adjudication"
    late = db.add_override(g2, examiner="erin", final_score=6.0, agreement="agree")  # a second marker who came late
    assert late.phase == "second" and db.final_mark(g2) == {"score": 6.0, "status": "agreed", "marks": [a.id, late.id]}

    assert db.final_mark(g3) == {"score": None, "status": "unmarked", "marks": []}
    with pytest.raises(ValueError, match="no grade"):
        db.final_mark(g3 + 100)
    # History reads them all at once: the same marks in force, and no row for a grade that is not there
    assert db.final_marks([g1, g2, g3, g3 + 100]) == {g: db.final_mark(g) for g in (g1, g2, g3)}
    with pytest.raises(ValueError, match="role must be one of"):
        db.work_queue("alice", "boss")


def test_work_queue_filters_shuffle_and_single_marking(db):
    session = db.add_session("single")  # double_marking 0: one mark each
    grades = [add_response_graded(db, session, f"c{i % 3}") for i in range(12)]
    other = add_response_graded(db)  # outside any session
    assert [r["grade_id"] for r in db.work_queue("alice", session_id=session)] == grades
    assert [r["grade_id"] for r in db.work_queue("alice", candidate="c1")] == grades[1::3]
    assert db.work_queue("alice", part="no such part") == []
    shuffled = [r["grade_id"] for r in db.work_queue("alice", session_id=session, shuffle_seed=3)]
    assert shuffled == [r["grade_id"] for r in db.work_queue("alice", session_id=session, shuffle_seed=3)]
    assert shuffled != grades and sorted(shuffled) == grades

    mark = db.add_override(grades[0], examiner="alice", final_score=5.0, agreement="agree")
    assert db.final_mark(grades[0]) == {"score": 5.0, "status": "marked", "marks": [mark.id]}
    assert grades[0] not in [r["grade_id"] for r in db.work_queue("bob")]  # single-marked: done
    assert db.review(grades[0], examiner="bob", role="examiner")["marks"][0]["id"] == mark.id  # done: visible
    # An admin marking a response others have marked overrules it; an examiner's is one more first mark.
    assert db.add_override(grades[0], examiner="bob", final_score=6.0, agreement="agree").phase == "first"
    assert db.final_mark(grades[0])["score"] == 6.0
    assert db.add_override(grades[0], examiner="root", final_score=4.0, agreement="agree", role="admin").phase == (
        "adjudication")
    assert db.final_mark(grades[0]) == {"score": 4.0, "status": "adjudicated", "marks": [db.grade(grades[0])[
        "overrides"][-1]["id"]]}
    assert other in [r["grade_id"] for r in db.work_queue("alice")]
    assert db.review(other + 100, examiner="alice") is None


def test_queued_marks_of_either_shape_replay(tmp_path):
    """A mark queued while the database is locked keeps its role, phase and what was seen, and its phase (left to
    storage) is decided when it is stored; a line written by the app before marking phases still replays, as the
    first mark it was."""
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        session = db.add_session("S", double_marking=1.0)
        grade_id = add_response_graded(db, session)
        db.add_override(grade_id, examiner="alice", final_score=6.0, agreement="agree")
    db = Database.open(path, busy_timeout_s=0.05)
    locker = lock(path)
    receipt = db.add_override(grade_id, examiner="bob", final_score=7.0, agreement=None, seen=["audio", "marks"],
                              role="adjudicator")
    assert receipt.queued and receipt.phase is None
    old_line = {"override_uuid": "00000000-0000-4000-8000-000000000001", "grade_id": grade_id, "examiner": "eve",
                "final_score": 5.0, "agreement": "partly", "reason_code": None, "comment": None,
                "created_at": datetime.now(UTC).isoformat()}
    db.outbox.append(old_line)
    assert [r["override_uuid"] for r in db.outbox.read()] == [receipt.uuid, old_line["override_uuid"]]
    locker.rollback()
    assert db.flush_outbox() == 2 and not db.outbox
    marks = {m["override_uuid"]: m for m in db.grade(grade_id)["overrides"]}
    bob, eve = marks[receipt.uuid], marks[old_line["override_uuid"]]
    assert (bob["phase"], bob["role"], bob["model_seen"], bob["seen"]) == ("second", "adjudicator", False,
                                                                           ["audio", "marks"])
    assert (eve["phase"], eve["role"], eve["model_seen"], eve["seen"], eve["agreement"]) == (
        "first", "examiner", True, None, "partly")
    db.close()


@pytest.mark.parametrize("bad", [{"role": "boss"}, {"phase": "third"}, {"seen": ["audio", "audio"]},
                                 {"seen": ["score"]}, {"seen": ["audio"], "model_seen": True},
                                 {"model_seen": "yes"}, {"agreement": "agree", "model_seen": False}])
def test_invalid_marks_are_refused(db, bad):
    grade_id = add_graded(db)
    with pytest.raises((ValueError, TypeError)):
        db.add_override(grade_id, examiner="alice", final_score=5.0, **{"agreement": None} | bad)
    assert count_overrides(db) == 0 and not db.outbox
