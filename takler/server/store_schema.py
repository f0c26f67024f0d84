"""Opening the durable store: its schema, upgrades and transactions.

:class:`StoreBase` opens (or creates) the SQLite database, checks it is an
intact takler store of a schema this takler reads, upgrades an older one in
place (``_UPGRADES``), and gives :meth:`StoreBase._write`, the one way to
write: a transaction whose SQLite failures become :class:`StoreError`. The
tables are described in :mod:`takler.server.store`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from takler.core.errors import TaklerError

__all__ = ["DB_NAME", "SCHEMA_VERSION", "StoreBase", "StoreError"]

DB_NAME = "takler.db"
SCHEMA_VERSION = 2

_SCHEMA = f"""
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES ({SCHEMA_VERSION});
CREATE TABLE flows (name TEXT PRIMARY KEY, definition TEXT NOT NULL);
CREATE TABLE node_state (path TEXT PRIMARY KEY, flow TEXT NOT NULL, state TEXT NOT NULL)
    WITHOUT ROWID;
CREATE INDEX node_state_flow ON node_state (flow);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE history (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, tryno INTEGER NOT NULL, runner TEXT,
    rid TEXT, submitted_at TEXT, started_at TEXT, ended_at TEXT, exit TEXT, code INTEGER,
    reason TEXT
);
CREATE INDEX history_path ON history (path, tryno);
"""

#: records not ended yet, read at each start: kept small by the index's condition
_OPEN_HISTORY_INDEX = (
    "CREATE INDEX IF NOT EXISTS history_open ON history (id) WHERE ended_at IS NULL"
)

#: version -> statements that turn a store of that version into the next one
_UPGRADES: dict[int, tuple[str, ...]] = {
    1: (
        "INSERT INTO kv (key, value) SELECT 'server.state', value FROM kv"
        " WHERE key = 'server_state' ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        "DELETE FROM kv WHERE key = 'server_state'",
    ),
}


_LEFT_AS_IS = "it is left as it is: move it away, or start from a checkpoint with --restore"


class StoreError(TaklerError, RuntimeError):
    """The store cannot be opened, read or written (damaged, newer, read-only, full)."""

    code = "read_only_store"


class StoreBase:
    """The connection to the store: open, check, upgrade, close, transactions.
    Open with :meth:`StoreBase.open` (or that of a subclass)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, read_only: bool = False) -> None:
        self._conn = conn
        self.path = path
        #: opened in SQLite's read-only mode: every write raises StoreError
        self.read_only = read_only

    # ---------------------------------------------------------------- open, close

    @classmethod
    def open(cls, home: Path | str, *, read_only: bool = False) -> Self:
        """Open (creating it when missing) the store in ``home``.

        With ``read_only`` the database is opened in SQLite's read-only mode
        and every write raises StoreError. In a folder that cannot be written
        SQLite cannot make the WAL index, so the file is then read as
        immutable: nobody can write it there.

        Raises:
            StoreError: the file is not a takler store (it is never
                overwritten), was written by a newer takler, or cannot be opened.
        """
        path = Path(home) / DB_NAME
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot open the store {path}: {e}") from e
            return cls._open(path, str(path), read_only=False)
        try:
            return cls._open(path, path.absolute().as_uri() + "?mode=ro", read_only=True)
        except StoreError as e:
            if not isinstance(e.__cause__, sqlite3.OperationalError):
                raise
            return cls._open(
                path, path.absolute().as_uri() + "?mode=ro&immutable=1", read_only=True
            )

    @classmethod
    def _open(cls, path: Path, target: str, *, read_only: bool) -> Self:
        try:
            conn = sqlite3.connect(
                target, uri=read_only, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the store {path}: {e}") from e
        store = cls(conn, path, read_only)
        try:
            store._setup(read_only)
        except BaseException:
            conn.close()
            raise
        return store

    def _setup(self, read_only: bool) -> None:
        conn = self._conn
        try:
            if not read_only:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path} is not a takler store (not an SQLite database, or damaged): {e};"
                f" {_LEFT_AS_IS}"
            ) from e
        if not tables:
            if read_only:
                raise StoreError(f"{self.path} holds no takler store")
            with self._write("create the store"):
                for statement in (*_SCHEMA.split(";"), _OPEN_HISTORY_INDEX):
                    if statement.strip():
                        conn.execute(statement)
            return
        if "schema_version" not in tables:
            raise StoreError(f"{self.path} is an SQLite database but not a takler store")
        try:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e
        version = row[0] if row else None
        if not isinstance(version, int):
            raise StoreError(f"{self.path} has no store schema version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}, newer than this takler reads"
                f" ({SCHEMA_VERSION}): run a newer takler"
            )
        self._check_intact()
        if version < SCHEMA_VERSION:
            if read_only or version not in _UPGRADES:
                raise StoreError(
                    f"{self.path} has store schema {version}: it needs an upgrade to"
                    f" {SCHEMA_VERSION}, which needs it writable"
                    if read_only
                    else f"{self.path} has store schema {version}, which this takler cannot upgrade"
                )
            self._upgrade(version)
        if not read_only and not self._has_index("history_open"):
            # Added without a schema change: older takler reads the store as before.
            with self._write("index the open job records"):
                conn.execute(_OPEN_HISTORY_INDEX)

    def _has_index(self, name: str) -> bool:
        try:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
            return self._conn.execute(query, (name,)).fetchone() is not None
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e

    def _check_intact(self) -> None:
        """Refuse a damaged database at open rather than at the first read of the
        damaged page (SQLite's quick_check reads every page: ~40 ms for 25 MB)."""
        try:
            problems = [row[0] for row in self._conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is damaged: {'; '.join(problems)}; {_LEFT_AS_IS}")

    def _upgrade(self, version: int) -> None:
        """Bring the store from ``version`` to the current schema, all or nothing."""
        with self._write(f"upgrade the store from schema {version}") as conn:
            while version < SCHEMA_VERSION:
                for statement in _UPGRADES[version]:
                    conn.execute(statement)
                version += 1
            conn.execute("UPDATE schema_version SET version = ?", (version,))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection (SQLite's count)."""
        return self._conn.total_changes

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction; any SQLite failure becomes StoreError and changes nothing."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise StoreError(f"cannot {what} in {self.path}: {e}") from e
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
