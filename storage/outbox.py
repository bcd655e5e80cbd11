"""A durable queue of overrides that could not be written to the database yet: one JSON object a line.

An append is fsync'd before it returns, so a queued override survives a crash as surely as a committed one. A lock
file serialises appends and rewrites across processes. A rewrite goes to a temporary file that atomically replaces
the queue, so a crash at any moment leaves every pending override in it; at worst a replay repeats one that was
already stored, which the unique override_uuid turns into a no-op.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def outbox_path(database: str | Path) -> Path:
    """Where a SQLite database's outbox lives: beside it, `<database file>.outbox.jsonl`."""
    database = Path(database)
    return database.with_name(database.name + ".outbox.jsonl")


class Outbox:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __bool__(self) -> bool:
        """Whether anything is pending (the file is removed once empty)."""
        return self.path.exists()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._locked(), open(self.path, "ab+") as f:
            if f.seek(0, os.SEEK_END):
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line  # end a torn line first, or this record would be glued to it and lost
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path.parent)  # the file may be new: make its name durable too

    def read(self) -> list[dict[str, Any]]:
        """Pending records, oldest first. A torn last line (a crash mid-append, never acknowledged) is skipped."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def remove(self, uuids: set[str]) -> None:
        """Drop the records with these override_uuids, keeping any appended meanwhile by other processes."""
        if not uuids:
            return
        with self._locked():
            keep = [r for r in self.read() if r["override_uuid"] not in uuids]
            if keep:
                temporary = self.path.with_name(self.path.name + ".tmp")
                with open(temporary, "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in keep)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, self.path)
            else:
                self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
