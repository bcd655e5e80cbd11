"""Storage failures a person can act on, by cause (SQLite's result codes, PostgreSQL's SQLSTATEs): locked,
read-only, full, unavailable, damaged."""

import sqlite3

import sqlalchemy as sa


class StorageError(Exception):
    """A database failure a person can act on. The message is one line for the UI: what went wrong, and what
    became of the data."""

    reason = "the database cannot be opened or reached"

    def __init__(self, fate: str = "", detail: str = ""):
        self.fate, self.detail = fate, detail
        super().__init__("; ".join(filter(None, [self.reason + (f" ({detail})" if detail else ""), fate])))

    def __reduce__(self):  # rebuilt from its parts (pickled between processes), not from the message
        return type(self), (self.fate, self.detail)


class DatabaseLocked(StorageError):
    reason = "the database is locked by another process"


class DatabaseReadOnly(StorageError):
    reason = "the database is read-only (check the permissions of the file and its folder)"


class DatabaseFull(StorageError):
    reason = "the disk holding the database is full"


class DatabaseUnavailable(StorageError):
    """Cannot open or reach the database: a missing folder, an I/O error, a server that does not answer."""


class DatabaseCorrupt(StorageError):
    reason = "the database file is damaged or is not a SQLite database"


class DatabaseGone(StorageError):
    """The file the app opened was deleted or replaced under it: what it writes there is lost at the next start."""

    reason = ("the database file or its WAL was deleted or replaced while the app ran (put the database back if it "
              "is gone, then restart the app)")


SQLITE_ERRORS: dict[int, type[StorageError]] = {
    sqlite3.SQLITE_BUSY: DatabaseLocked, sqlite3.SQLITE_LOCKED: DatabaseLocked,
    sqlite3.SQLITE_READONLY: DatabaseReadOnly, sqlite3.SQLITE_FULL: DatabaseFull,
    sqlite3.SQLITE_CORRUPT: DatabaseCorrupt, sqlite3.SQLITE_NOTADB: DatabaseCorrupt}


# PostgreSQL's SQLSTATEs: lock_not_available (lock_timeout), read_only_sql_transaction, disk_full,
# insufficient_resources, data_corrupted, index_corrupted.
POSTGRES_ERRORS: dict[str, type[StorageError]] = {
    "55P03": DatabaseLocked, "25006": DatabaseReadOnly, "53100": DatabaseFull, "53000": DatabaseFull,
    "XX001": DatabaseCorrupt, "XX002": DatabaseCorrupt}


def storage_error(error: sa.exc.DBAPIError, fate: str = "") -> StorageError:
    """The StorageError for a driver error, by SQLite's primary result code or PostgreSQL's SQLSTATE (anything
    else: unavailable)."""
    cls = SQLITE_ERRORS.get(getattr(error.orig, "sqlite_errorcode", -1) & 0xFF) or POSTGRES_ERRORS.get(
        getattr(error.orig, "sqlstate", None) or "", DatabaseUnavailable)
    return cls(fate, detail=str(error.orig).strip() if cls is DatabaseUnavailable else "")
