"""The job history of the durable store: one row per job in table ``history``.

:class:`HistoryStore` adds to :class:`~takler.server.store_schema.StoreBase`
the history writes (:meth:`~HistoryStore.add_history`,
:meth:`~HistoryStore.update_history`, and :class:`HistoryOp`, a write that
:meth:`takler.server.store.Store.write` applies in the transaction of a save)
and the history query (:meth:`~HistoryStore.history`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import attrs

from takler.server.store_schema import StoreBase, StoreError

__all__ = ["HistoryOp", "HistoryStore"]

_HISTORY_FIELDS = (
    "path",
    "tryno",
    "runner",
    "rid",
    "submitted_at",
    "started_at",
    "ended_at",
    "exit",
    "code",
    "reason",
)
_UNSET: Any = object()


@attrs.frozen
class HistoryOp:
    """One job-history write: ``add`` a record, or ``update`` with ``fields`` the
    latest record of ``path`` try ``tryno`` (of job ``rid`` when given: a
    requeue starts try numbers again)."""

    action: str
    path: str
    tryno: int
    fields: dict[str, Any] = attrs.field(factory=dict, hash=False)
    rid: str | None = None


def _time(value: dt.datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


class HistoryStore(StoreBase):
    """A store's job history (see the module docstring)."""

    def add_history(
        self,
        path: str,
        tryno: int,
        runner: str,
        *,
        rid: str | None = None,
        submitted_at: dt.datetime | str | None = None,
    ) -> int:
        """Record a job submission; returns its row id.

        Raises:
            StoreError: the database cannot be written.
        """
        op = HistoryOp(
            "add", path, tryno, {"runner": runner, "rid": rid, "submitted_at": submitted_at}
        )
        with self._write("record history") as conn:
            rowid = self._write_history(conn, op)
        return rowid

    def update_history(
        self,
        path: str,
        tryno: int,
        *,
        rid: str | None = _UNSET,
        started_at: dt.datetime | str | None = _UNSET,
        ended_at: dt.datetime | str | None = _UNSET,
        exit: str | None = _UNSET,
        code: int | None = _UNSET,
        reason: str | None = _UNSET,
    ) -> bool:
        """Set the given fields on the latest record of ``path`` try ``tryno``.

        Returns:
            False when there is no such record.

        Raises:
            StoreError: the database cannot be written.
        """
        fields = {
            "rid": rid,
            "started_at": _time(started_at) if started_at is not _UNSET else _UNSET,
            "ended_at": _time(ended_at) if ended_at is not _UNSET else _UNSET,
            "exit": exit,
            "code": code,
            "reason": reason,
        }
        given = {k: v for k, v in fields.items() if v is not _UNSET}
        if not given:
            return False
        with self._write("record history") as conn:
            return self._write_history(conn, HistoryOp("update", path, tryno, given)) > 0

    @staticmethod
    def _write_history(conn: sqlite3.Connection, op: HistoryOp) -> int:
        """Apply one history write; returns the new row id (add) or the rows updated."""
        fields = {k: _time(v) for k, v in op.fields.items() if k in _HISTORY_FIELDS[2:]}
        if op.action == "add":
            names = ", ".join(("path", "tryno", *fields))  # names checked against the fixed tuple
            marks = ", ".join("?" * (len(fields) + 2))
            cursor = conn.execute(
                f"INSERT INTO history ({names}) VALUES ({marks})",
                (op.path, op.tryno, *fields.values()),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid
        if not fields:
            return 0
        assignments = ", ".join(f"{k} = ?" for k in fields)
        same_job = " AND rid = ?" if op.rid is not None else ""
        cursor = conn.execute(
            f"UPDATE history SET {assignments} WHERE id = (SELECT max(id) FROM history"
            f" WHERE path = ? AND tryno = ?{same_job})",
            (*fields.values(), op.path, op.tryno, *([op.rid] if op.rid is not None else [])),
        )
        return cursor.rowcount

    def history(self, path: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The latest ``limit`` job records, oldest first; of ``path`` and below when given.

        Raises:
            StoreError: the database cannot be read.
        """
        columns = ", ".join(_HISTORY_FIELDS)
        query = f"SELECT {columns} FROM history"
        args: tuple[Any, ...] = ()
        if path is not None and path.strip("/"):
            path = "/" + path.strip("/")
            # "0" sorts right after "/": the range holds exactly the paths below.
            query += " WHERE path = ? OR (path >= ? AND path < ?)"
            args = (path, path + "/", path + "0")
        query += " ORDER BY id DESC LIMIT ?"
        try:
            rows = self._conn.execute(query, (*args, limit)).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read history from {self.path}: {e}") from e
        return [dict(zip(_HISTORY_FIELDS, row, strict=True)) for row in reversed(rows)]

    def open_history(self) -> list[tuple[str, int, str | None]]:
        """(path, tryno, rid) of every record with no end, oldest first: jobs
        still running, or that ended while no server watched them.

        Raises:
            StoreError: the database cannot be read.
        """
        try:
            rows = self._conn.execute(
                "SELECT path, tryno, rid FROM history WHERE ended_at IS NULL ORDER BY id"
            ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read history from {self.path}: {e}") from e
        return [(path, tryno, rid) for path, tryno, rid in rows]
