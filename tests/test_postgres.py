"""What only a PostgreSQL server shows: a mark waiting on a lock past the busy timeout goes to the outbox (--outbox)
and is replayed once; `postgresql://` URLs use psycopg 3; the schema's CHECKs and widths hold on the server itself.
Skipped, saying why, without $GRADER_TEST_POSTGRES_URL (.ci/run starts a server and sets it)."""

import pytest
import sqlalchemy as sa

from storage import Database, DatabaseLocked
from storage.engine import make_engine
from ui.config import AppConfig


def graded(db: Database) -> int:
    response = db.add_response(audio_sha256="ab" * 32, duration_s=2.0, part="p" * 64)
    return db.add_grade(response, checkpoint_id="ck", scale_name="speechocean762", scores={}, scorable=False,
                        latency_s=0.1)


def test_a_locked_server_queues_the_mark(postgres_url, tmp_path):
    with Database.open(postgres_url) as db:
        grade_id = graded(db)
    db = Database.open(postgres_url, outbox=tmp_path / "outbox.jsonl", busy_timeout_s=0.2)
    locker = make_engine(postgres_url).connect()
    locker.exec_driver_sql("LOCK TABLE overrides IN ACCESS EXCLUSIVE MODE")  # held until rollback
    receipt = db.add_override(grade_id, examiner="alice", final_score=4.0, agreement=None, seen=["audio"])
    assert receipt.queued and isinstance(receipt.error, DatabaseLocked)
    assert str(receipt.error) == "the database is locked by another process; your override was kept and will be retried"
    locker.rollback()
    locker.close()
    assert db.flush_outbox() == 1 and not db.outbox
    [mark] = db.grade(grade_id)["overrides"]
    assert (mark["override_uuid"], mark["phase"], mark["model_seen"]) == (receipt.uuid, "first", False)
    db.close()


def test_the_server_enforces_the_schema(postgres_url):
    url = sa.make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    config = AppConfig(db=url)  # --db postgresql://...: psycopg 3, no SQLite file, no outbox unless --outbox
    assert config.sqlite_file is None and config.outbox_file is None
    with Database.open(config.database_url) as db:
        assert db.engine.dialect.driver == "psycopg" and db.outbox is None
        grade_id = graded(db)
        db.add_override(grade_id, examiner="alice", final_score=4.0, agreement=None)
        with db.engine.connect() as connection:
            for sql in ("UPDATE overrides SET role = 'boss'", "UPDATE overrides SET phase = 'third'",
                        "UPDATE sessions SET double_marking = 2", "UPDATE responses SET part = repeat('p', 65)"):
                with pytest.raises(sa.exc.DBAPIError), connection.begin():
                    connection.exec_driver_sql("INSERT INTO sessions (name, double_marking, created_at) "
                                               "VALUES ('s', 0.5, now())")
                    connection.exec_driver_sql(sql)


@pytest.mark.parametrize("refusal", ["read-only", "unreachable"])
def test_a_refusing_server_queues_the_mark(postgres_url, tmp_path, refusal):
    """The server turns the database read-only (default_transaction_read_only) or takes no more connections
    (CONNECTION LIMIT 0), and drops the app's open ones: the mark goes to the outbox, and is stored once the
    server takes it again."""
    with Database.open(postgres_url) as db:
        grade_id = graded(db)
    db = Database.open(postgres_url, outbox=tmp_path / "outbox.jsonl")
    name = sa.make_url(postgres_url).database
    admin = make_engine(postgres_url.rsplit("/", 1)[0] + "/postgres").execution_options(isolation_level="AUTOCOMMIT")
    setting = {"read-only": ("SET default_transaction_read_only = on", "RESET default_transaction_read_only"),
               "unreachable": ("CONNECTION LIMIT 0", "CONNECTION LIMIT -1")}[refusal]
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{name}" {setting[0]}')
        connection.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                                   "AND pid <> pg_backend_pid()")
    receipt = db.add_override(grade_id, examiner="alice", final_score=4.0, agreement=None)
    assert receipt.queued and str(receipt.error).endswith("your override was kept and will be retried")
    assert ("read-only" if refusal == "read-only" else "cannot be opened or reached") in str(receipt.error)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'ALTER DATABASE "{name}" {setting[1]}')
        connection.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                                   "AND pid <> pg_backend_pid()")
    admin.dispose()
    assert db.flush_outbox() == 1 and [m["override_uuid"] for m in db.grade(grade_id)["overrides"]] == [receipt.uuid]
    db.close()
