"""The SQLAlchemy engine: SQLite pragmas (WAL, foreign keys, busy timeout, sync level), file paths, migrations."""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 762_016  # the PostgreSQL advisory lock that serialises migrations


Synchronous = Literal["NORMAL", "FULL", "EXTRA"]


def make_engine(url: str, busy_timeout_s: float = 10.0, synchronous: Synchronous = "FULL") -> sa.Engine:
    """An engine whose SQLite connections all get WAL, foreign keys, a busy timeout and the sync level, and whose
    transactions SQLAlchemy begins itself: the driver's own BEGIN skips DDL (migrations would not be atomic) and
    cannot take the write lock up front. On PostgreSQL (`postgresql://` means psycopg 3 here) the busy timeout is
    the server's lock_timeout: a write that waits longer for a lock fails, and a mark goes to the outbox, as on
    SQLite; the connection is checked before use (a restarted server costs no failed write)."""
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True,
                                connect_args={"options": f"-c lock_timeout={round(busy_timeout_s * 1000)}"})
    engine = sa.create_engine(parsed)
    if engine.dialect.name != "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        deadline = time.monotonic() + busy_timeout_s
        while True:  # turning a new file to WAL fails at once, not after the busy timeout, if another process has it
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        # A writer takes the lock at BEGIN, where the busy timeout applies, rather than failing at once on
        # upgrading a read snapshot that another writer has made stale.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("write") else "BEGIN")

    return engine


def migrate(engine: sa.Engine, revision: str = "head", downgrade: bool = False) -> None:
    """`alembic upgrade head` (or to/down to `revision`), skipped without taking the write lock when the schema is
    current (a read-only database at head opens fine)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    target = ScriptDirectory.from_config(config).get_revision(revision).revision
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == target:
            return
    with migrating(engine) as connection:
        config.attributes["connection"] = connection
        (command.downgrade if downgrade else command.upgrade)(config, revision)


@contextmanager
def migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction for a migration. On SQLite, foreign keys are off while it runs (a batch migration copies
    a table, drops the original and renames the copy: with them on, dropping a table others refer to fails) and
    checked before it commits; BEGIN IMMEDIATE makes migrations wait for each other. On PostgreSQL an advisory lock
    does: Alembic then reads the revision another instance just committed, and has nothing left to do."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # before BEGIN: inside a transaction the pragma does nothing
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.execution_options(write=True).begin():
                if engine.dialect.name == "postgresql":  # app instances starting at once migrate one at a time
                    connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                yield connection
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise RuntimeError(f"the migration would leave {len(broken)} broken reference(s), first: "
                                       f"{broken[0]}; nothing was changed")
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (also `sqlite:///file:...?uri=true`); None for memory or a server."""
    parsed = sa.make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    return Path(name.removeprefix("file:") if parsed.query.get("uri") else name).resolve()
