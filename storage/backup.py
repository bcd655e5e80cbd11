"""Back up the grades database while the app runs: `python -m storage.backup data/grades.db backups/grades.db`.

SQLite's online backup API copies a consistent snapshot page by page without stopping writers (a plain `cp` of a
WAL database can miss committed pages still in the -wal file). Overrides waiting in the outbox are copied beside
the snapshot, so a backup holds every override the app acknowledged. The copy is checked before it is reported.
"""

import argparse
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .models import Grade, Override
from .outbox import outbox_path


@dataclass
class BackupReport:
    path: Path
    grades: int
    overrides: int
    pending_overrides: int  # in the outbox copied beside the snapshot


def backup(database: str | Path, destination: str | Path) -> BackupReport:
    """Snapshot `database` (a SQLite file) into `destination`, with its outbox; raises if either copy is bad."""
    source, target = Path(database), Path(destination)
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    if target.resolve() == source.resolve():
        raise ValueError("the backup must go to another file than the database")
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as reader, sqlite3.connect(target) as writer:
        reader.backup(writer)
    pending = 0
    outbox = outbox_path(source)
    if outbox.is_file():
        shutil.copy2(outbox, outbox_path(target))
        pending = sum(1 for line in outbox.read_text().splitlines() if line.strip())
    engine = sa.create_engine(f"sqlite:///file:{target.resolve()}?mode=ro&uri=true")
    try:
        with engine.connect() as copy:
            if (check := copy.exec_driver_sql("PRAGMA integrity_check").scalar()) != "ok":
                raise RuntimeError(f"the backup at {target} failed its integrity check: {check}")
            grades, overrides = (copy.scalar(sa.select(sa.func.count()).select_from(t)) for t in (Grade, Override))
    finally:
        engine.dispose()
    return BackupReport(target, grades, overrides, pending)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", help="the app's SQLite file, e.g. data/grades.db")
    parser.add_argument("destination", help="the backup file to write (replaced if it exists)")
    args = parser.parse_args(argv)
    try:
        report = backup(args.database, args.destination)
    except (OSError, ValueError, RuntimeError, sqlite3.Error) as error:
        print(f"backup failed: {error}", file=sys.stderr)
        return 1
    print(f"backed up {report.grades} grades and {report.overrides} overrides to {report.path}"
          + (f", plus {report.pending_overrides} overrides waiting in the outbox" if report.pending_overrides else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
