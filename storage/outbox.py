"""A durable queue of overrides that could not be written to the database yet: one JSON object a line.

An append is fsync'd before it returns, so a queued override survives a crash as surely as a committed one. A lock
file serialises appends and rewrites across processes. A rewrite goes to a temporary file that atomically replaces
the queue, so a crash at any moment leaves every pending override in it; at worst a replay repeats one that was
already stored, which the unique override_uuid turns into a no-op.

A line that is not a valid record (a torn last line, never acknowledged; a hand edit; JSON of another shape) is
moved to `<outbox>.rejected` with a warning naming its line, so the queue keeps moving and nothing is thrown away.
"""

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def outbox_path(database: str | Path) -> Path:
    """Where a SQLite database's outbox lives: beside it, `<database file>.outbox.jsonl`."""
    database = Path(database)
    return database.with_name(database.name + ".outbox.jsonl")


class Outbox:
    """`check(record)` raises ValueError or TypeError for a record of the wrong shape (default: any JSON object with
    an override_uuid passes)."""

    def __init__(self, path: str | Path, check: Callable[[Any], None] | None = None):
        self.path = Path(path)
        self.rejected = self.path.with_name(self.path.name + ".rejected")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._check = check or _has_uuid

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
        """Pending records, oldest first; lines that are not records are moved to the rejected file first."""
        records, bad = self._parse()
        if bad:
            with self._locked():
                records, bad = self._parse()  # again under the lock: another process may have rewritten it
                if bad:
                    self._reject(records, bad)
        return records

    def _parse(self) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
        """(valid records, [(line number, line, why) for each other non-empty line])."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return [], []
        records, bad = [], []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._check(record)
            except json.JSONDecodeError:
                bad.append((number, line, "not valid JSON (a write cut short by a crash, or a hand edit)"))
            except (ValueError, TypeError, KeyError) as error:
                bad.append((number, line, f"not an override record ({type(error).__name__}: {error})"))
            else:
                records.append(record)
        return records, bad

    def _reject(self, records: list[dict[str, Any]], bad: list[tuple[int, str, str]]) -> None:
        """Append the bad lines to the rejected file (fsync'd), then rewrite the queue with the records alone."""
        with open(self.rejected, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for _, line, _ in bad)
            f.flush()
            os.fsync(f.fileno())
        for number, _, why in bad:
            log.warning("outbox %s line %d skipped: %s; moved to %s", self.path, number, why, self.rejected)
        self._rewrite(records)

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        if records:
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        else:
            self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)

    def remove(self, uuids: set[str]) -> None:
        """Drop the records with these override_uuids, keeping any appended meanwhile by other processes."""
        if not uuids:
            return
        with self._locked():
            records, bad = self._parse()
            keep = [r for r in records if r["override_uuid"] not in uuids]
            self._reject(keep, bad) if bad else self._rewrite(keep)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield


def _has_uuid(record: Any) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("override_uuid"), str):
        raise ValueError("not a JSON object with an override_uuid")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
