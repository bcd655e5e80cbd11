"""Alembic upgrades of a database made by an earlier schema: nothing is lost, new columns get their defaults, and the
migrated schema is the models' (on SQLite here, and on PostgreSQL where tests/conftest.py finds a server)."""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage import Base, Database
from storage.engine import make_engine, migrate


def alembic(url: str, revision: str, downgrade: bool = False) -> None:
    """`alembic upgrade|downgrade <revision>` on the database at `url`, as Database.open runs it."""
    engine = make_engine(url)
    migrate(engine, revision, downgrade)
    engine.dispose()


WHEN = datetime(2026, 11, 30, 9, 15)  # naive UTC, as the columns store it


def fill_0001(url: str) -> None:
    """Grades and overrides as the app wrote them before marking phases (plain SQL: today's models no longer match
    this schema). Ids come from the database (1 and 2 in a new one), so that its sequences move on."""
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("INSERT INTO responses (audio_sha256, duration_s, part, candidate_id, prompt_text, "
                          "created_at) VALUES (:sha, 3.5, 'part 1', 'cand-1', 'We call it bear.', :t), "
                          "(:sha, 2.0, NULL, NULL, NULL, :t)"), {"sha": "ab" * 32, "t": WHEN})
        c.execute(sa.text("INSERT INTO grades (response_id, checkpoint_id, scale_name, scores, headline, "
                          "regression, soft, hard, scorable, gate_measures, latency_s, created_at) VALUES "
                          "(1, 'ck', 'speechocean762', :scores, 'total', 7.2, 7.4, 8, :yes, '{}', 0.5, :t), "
                          "(2, 'ck', 'speechocean762', '{}', NULL, NULL, NULL, NULL, :no, '{}', 0.1, :t)"),
                  {"scores": '{"total": {"regression": 7.2, "soft": 7.4, "hard": 8.0}}', "yes": True, "no": False,
                   "t": WHEN})
        c.execute(sa.text("INSERT INTO overrides (override_uuid, grade_id, examiner, final_score, agreement, "
                          "reason_code, comment, created_at) VALUES "
                          "('00000000-0000-4000-8000-00000000000a', 1, 'alice', 6.0, 'partly', 'fluency', 'ok', :t),"
                          "('00000000-0000-4000-8000-00000000000b', 1, 'bob', 7.0, 'agree', NULL, NULL, :t)"),
                  {"t": WHEN})
    engine.dispose()


def test_upgrade_from_0001_keeps_everything(backend_url):
    alembic(backend_url, "0001")
    fill_0001(backend_url)
    with Database.open(backend_url) as db:  # migrates to head
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        grade = db.grade(1)
        assert (grade["soft"], grade["scores"]["total"]["hard"], grade["response"]["prompt_text"]) == (
            7.4, 8.0, "We call it bear.")
        assert (grade["response"]["session_id"], grade["response"]["file_name"]) == (None, None)
        assert not db.grade(2)["scorable"]
        marks = grade["overrides"]
        assert [(m["examiner"], m["final_score"], m["agreement"], m["reason_code"], m["comment"]) for m in marks] == [
            ("alice", 6.0, "partly", "fluency", "ok"), ("bob", 7.0, "agree", None, None)]
        assert all((m["role"], m["phase"], m["model_seen"], m["seen"]) == ("examiner", "first", True, None)
                   for m in marks)
        assert marks[0]["created_at"] == WHEN.replace(tzinfo=UTC)
        assert db.final_mark(1)["score"] == 7.0  # the newest first mark, as before
        # what 0001 could not hold: a 64-character task part, a mark without agreement, a session
        session = db.add_session("after the upgrade", double_marking=0.5)
        response = db.add_response(audio_sha256="cd" * 32, duration_s=1.0, part="p" * 64, session_id=session,
                                   file_name="x.flac")
        grade_id = db.add_grade(response, checkpoint_id="ck", scale_name="speechocean762", scores={},
                                scorable=False, latency_s=0.1)
        assert db.add_override(grade_id, examiner="carol", final_score=3.0, agreement=None, seen=["audio"]).id


def test_downgrade_and_upgrade_again(backend_url):
    alembic(backend_url, "0001")
    fill_0001(backend_url)
    alembic(backend_url, "head")
    alembic(backend_url, "0001", downgrade=True)
    engine = make_engine(backend_url)
    with engine.connect() as c:
        assert "sessions" not in sa.inspect(c).get_table_names()
        assert c.execute(sa.text("SELECT examiner FROM overrides ORDER BY id")).scalars().all() == ["alice", "bob"]
    engine.dispose()
    with Database.open(backend_url) as db:
        assert [m["phase"] for m in db.grade(1)["overrides"]] == ["first", "first"]
