"""The object memory's SQLite file: versioned schema, WAL journal, one transaction per update.

The file is identified by SQLite's ``application_id`` (:data:`APPLICATION_ID`) and its schema
version by ``user_version`` (:data:`SCHEMA_VERSION`). Opening checks both and SQLite's
``quick_check``: a file that is not SQLite, belongs to another application, comes from a newer
schema or is damaged is a one-line :class:`MemoryFileError` and is never written to. Each
:meth:`MemoryStore.write` is one committed transaction in WAL mode, so a process killed at any
moment leaves the file as of its last update.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from ros_mm_perception.core.errors import UserError

APPLICATION_ID = 0x524D4D4F
"""SQLite ``application_id`` of an object memory file ("RMMO")."""
SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    confirmed INTEGER NOT NULL,
    mean BLOB NOT NULL,
    covariance BLOB NOT NULL,
    size BLOB NOT NULL,
    phrases TEXT NOT NULL,
    embedding BLOB,
    embedding_count INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    observations INTEGER NOT NULL,
    misses INTEGER NOT NULL,
    log_odds REAL NOT NULL
);
"""
COLUMNS = (
    "id",
    "state",
    "confirmed",
    "mean",
    "covariance",
    "size",
    "phrases",
    "embedding",
    "embedding_count",
    "first_seen_ns",
    "last_seen_ns",
    "observations",
    "misses",
    "log_odds",
)


class MemoryFileError(UserError):
    """An object memory file cannot be used; the file was left as it is."""


def _blob(values, dtype) -> bytes:
    return np.ascontiguousarray(values, dtype=dtype).tobytes()


def row_of(record) -> tuple:
    """The ``objects`` row of a record (see :class:`~.objects.ObjectRecord`)."""
    emb = None if record.embedding_sum is None else _blob(record.embedding_sum, np.float32)
    return (
        record.id,
        record.state,
        int(record.confirmed),
        _blob(record.mean, np.float64),
        _blob(record.covariance, np.float64),
        _blob(record.size, np.float64),
        json.dumps(record.phrases, sort_keys=True),
        emb,
        record.embedding_count,
        record.first_seen_ns,
        record.last_seen_ns,
        record.observations,
        record.misses,
        record.log_odds,
    )


def fields_of(row: tuple) -> dict:
    """Record fields from an ``objects`` row."""
    values = dict(zip(COLUMNS, row))
    values["confirmed"] = bool(values["confirmed"])
    values["mean"] = _numbers(values, "mean", np.float64, 3)
    values["covariance"] = _numbers(values, "covariance", np.float64, 9).reshape(3, 3)
    values["size"] = _numbers(values, "size", np.float64, 3)
    values["phrases"] = {str(k): float(v) for k, v in json.loads(values["phrases"]).items()}
    values["embedding_sum"] = (None if values["embedding"] is None
                               else _numbers(values, "embedding", np.float32))
    del values["embedding"]
    return values


def _numbers(values: dict, column: str, dtype, count: Optional[int] = None) -> np.ndarray:
    """The finite numbers of a blob column (``count`` of them when given); a
    :class:`ValueError` otherwise."""
    blob, itemsize = values[column], np.dtype(dtype).itemsize
    if not isinstance(blob, bytes) or len(blob) % itemsize or (
        count is not None and len(blob) != count * itemsize
    ):
        raise ValueError(f"{column} is not {count or 'a list of'} numbers")
    numbers = np.frombuffer(blob, dtype).copy()
    if not np.isfinite(numbers).all():
        raise ValueError(f"{column} holds NaN or infinite values")
    return numbers


class MemoryStore:
    """One object memory file, opened (or created) at ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            self._check_header()
        try:
            self._db = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise MemoryFileError(f"cannot open the object memory {self.path}: {err}") from None
        try:
            if exists:
                self._check_file()
            else:
                self._create()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise MemoryFileError(
                f"the object memory {self.path} is damaged ({' '.join(str(err).split())}); "
                "it was left as it is"
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _check_header(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as err:
            raise MemoryFileError(
                f"cannot read the object memory {self.path}: {err.strerror}"
            ) from None
        if head != SQLITE_HEADER:
            raise MemoryFileError(
                f"{self.path} is not an object memory (not an SQLite file); it was left as it is"
            )

    def _check_file(self) -> None:
        app = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID:
            raise MemoryFileError(
                f"{self.path} is an SQLite file of another application, not an object memory; "
                "it was left as it is"
            )
        if version > SCHEMA_VERSION:
            raise MemoryFileError(
                f"{self.path} has object memory schema {version}; this version reads up to "
                f"{SCHEMA_VERSION} (update ros_mm_perception)"
            )
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(str(check).strip().splitlines()[-1])

    def _create(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------------------- reading

    def meta(self) -> Dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def rows(self) -> List[dict]:
        cursor = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM objects ORDER BY id")
        rows = []
        for row in cursor.fetchall():
            try:
                rows.append(fields_of(row))
            except (ValueError, TypeError, AttributeError) as err:
                raise MemoryFileError(
                    f"the object memory {self.path} is damaged (object {row[0]}: {err}); it was "
                    "left as it is"
                ) from None
        return rows

    # ------------------------------------------------------------------------------- writing

    def write(
        self,
        records: Iterable = (),
        deleted: Iterable[int] = (),
        meta: Optional[Dict[str, str]] = None,
    ) -> None:
        """Upsert ``records``, delete ``deleted`` ids and set ``meta`` keys, in one transaction."""
        rows = [row_of(r) for r in records]
        deleted = [(int(i),) for i in deleted]
        if not rows and not deleted and not meta:
            return
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:  # locked by another writer, or read-only
            raise MemoryFileError(
                f"cannot write the object memory {self.path}: {err} (another process may be "
                f"writing it); it was left as it is"
            ) from None
        try:
            if rows:
                db.executemany(
                    f"INSERT OR REPLACE INTO objects ({', '.join(COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(COLUMNS))})",
                    rows,
                )
            if deleted:
                db.executemany("DELETE FROM objects WHERE id = ?", deleted)
            if meta:
                db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(str(k), str(v)) for k, v in meta.items()],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()
