"""The durable store: an SQLite database (WAL) at ``<home>/takler.db``.

A commit is durable (``synchronous=FULL``): the server acknowledges a change
only after :meth:`Store.save` (or :meth:`Store.write`) returned. Tables:

* ``flows(name, definition)``: each flow's definition dump (no state);
* ``node_state(path, flow, state)``: each node's run-time state, as
  :func:`takler.codec.dump_node_state` gives it (passwords included). A flow
  written whole leaves out the rows of tasks never run (state
  ``FRESH_TASK_STATE``): a task is built in that state from its definition,
  and the rewrite deletes the flow's rows first, so a missing row means
  exactly that. Such rows, written by an older takler or by a touched-node
  save of a task put back in that state, are skipped on read;
* ``kv(key, value)``: small JSON values: ``bunch.parameters``, ``bunch.now``,
  ``server.<name>`` from server changes, and whatever the server puts there;
* ``history``: one row per job: path, tryno, runner, rid, submitted_at,
  started_at, ended_at, exit (how it ended: ``exited``, ``failed``...), code
  (its exit code) and reason. Index ``history_open`` holds the rows not
  ended yet, which each start reads (a row a killed server left open is
  closed then, ``lost``); it is made at open where missing, with no schema
  change.

Schema versions: 2 is current. Schema 1 also kept the server state under the
key ``server_state``, written in a transaction of its own; schema 2 keeps it
only under ``server.state``, in the same transaction as the change that set it.
Opening a schema-1 store upgrades it in place, in one transaction (see
``_UPGRADES`` in :mod:`takler.server.store_schema`); a read-only one cannot be
upgraded and is refused.

A Store is not safe for concurrent use: call it from one task at a time. The
server calls it from worker threads (``trio.to_thread.run_sync``), one call at
a time, so the connection is opened with ``check_same_thread=False``.

This module holds :class:`Store` itself (flows, node state, key-values,
prepared batches); it builds on :mod:`takler.server.store_schema` (opening,
schema, upgrades, transactions) and :mod:`takler.server.history` (the job
history), whose public names it exports as well.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from takler.codec import (
    FRESH_TASK_STATE,
    FRESH_TASK_STATE_TEXT,
    dump_node,
    dump_node_state,
    dumps,
    is_fresh_task,
    load_bunch,
    loads,
)
from takler.core.bunch import Bunch, gc_paused
from takler.core.change import Change, ChangeKind
from takler.core.errors import CodecError
from takler.core.node import Family, Flow
from takler.server.history import HistoryOp, HistoryStore
from takler.server.store_schema import DB_NAME, SCHEMA_VERSION, StoreError

__all__ = ["DB_NAME", "SCHEMA_VERSION", "Batch", "HistoryOp", "Store", "StoreError"]

#: key of the server state (running, shutdown, halted) in ``kv``
SERVER_STATE = "server.state"

#: Changes to a flow's definition: the flow is written again whole.
_STRUCTURAL = frozenset(
    {ChangeKind.node_added, ChangeKind.node_deleted, ChangeKind.trigger, ChangeKind.variable,
     ChangeKind.attribute}
)


def _flow_of(path: str) -> str:
    return path.split("/", 2)[1]


def _kv_text(value: Any) -> str:
    return dumps({"v": value})


# A row as prepared: (path, flow, state data). The data is fresh, shared with
# nothing in the model, so write() turns it into JSON text in its worker thread.
_Row = tuple[str, str, dict[str, Any]]
_FlowRows = tuple[dict[str, Any], list[_Row]]


def _flow_rows(flow: Flow) -> _FlowRows:
    """A flow's definition and its node_state rows, as data: no row for a task
    never run (most of a big flow), which the definition builds as it is."""
    name = flow.name
    rows = [
        (node.node_path, name, dump_node_state(node))
        for node in flow.walk()
        if not is_fresh_task(node)
    ]
    return dump_node(flow, state=False), rows


def _row_texts(rows: list[_Row]) -> Iterator[tuple[str, str, str]]:
    return ((path, flow, dumps(state)) for path, flow, state in rows)


@attrs.frozen(eq=False)
class Batch:
    """What one save writes, already taken from the model (see :meth:`Store.prepare`).

    Attributes:
        deleted: flows to delete, first.
        flows: flows to write whole: name -> (definition, state rows).
        rows: node_state rows to upsert: (path, flow, state data).
        kv: key-value rows: key -> JSON text.
        history: job-history writes, last.
    """

    deleted: list[str]
    flows: dict[str, _FlowRows]
    rows: list[_Row]
    kv: dict[str, str]
    history: list[HistoryOp] = attrs.Factory(list)


class Store(HistoryStore):
    """The server's durable state. Open with :meth:`Store.open`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, read_only: bool = False) -> None:
        super().__init__(conn, path, read_only)
        self._prepared_now: dt.datetime | None = None

    # ---------------------------------------------------------------- flows and state

    def prepare(
        self,
        bunch: Bunch,
        changes: Iterable[Change],
        *,
        structural_flows: Iterable[str] = frozenset(),
        history: Iterable[HistoryOp] = (),
    ) -> Batch:
        """Take from the model what saving ``changes`` writes; no I/O.

        Call it where the model is safe to read (the Trio thread); hand the
        batch to :meth:`write` in a worker thread. It takes the current state
        row of each node a change names (a limit change names the limit's
        owner); a structural change (node added or deleted, trigger, variable)
        takes its flow whole, as does each name in ``structural_flows`` (for
        edits that record no change, such as adding an event); a flow no longer
        in ``bunch`` is to be deleted; ``history`` is written in the same
        transaction. The cost grows with the number of touched nodes, not
        with the size of the flows.
        """
        rewrite = set(structural_flows)
        dropped: set[str] = set()
        touched: dict[str, None] = {}
        kv: dict[str, str] = {}
        for change in changes:
            path, kind = change.path, change.kind
            if kind is ChangeKind.server:
                kv[f"server.{change.name}"] = _kv_text(change.new)
            elif path == "/":
                if kind is ChangeKind.variable:
                    kv["bunch.parameters"] = _kv_text(dict(bunch.parameters))
            elif kind in _STRUCTURAL:
                flow_name = _flow_of(path)
                rewrite.add(flow_name)
                if kind is ChangeKind.node_deleted and path == f"/{flow_name}":
                    dropped.add(flow_name)
            else:
                touched[path] = None
        if bunch.now != self._prepared_now:
            kv["bunch.now"] = _kv_text(bunch.now.isoformat())
            self._prepared_now = bunch.now
        # A flow deleted (and maybe added again) is deleted first, and flows are
        # written in the bunch's order: load() reads them back in rowid order.
        deleted = sorted(dropped | (rewrite - bunch.flows.keys()))
        flows = {name: _flow_rows(f) for name, f in bunch.flows.items() if name in rewrite}
        rows = []
        for path in touched:
            flow_name = _flow_of(path)
            node = bunch.get_node(path)
            if node is not None and flow_name not in rewrite:
                rows.append((path, flow_name, dump_node_state(node)))
        return Batch(deleted, flows, rows, kv, list(history))

    def write(self, batches: Iterable[Batch]) -> None:
        """Write prepared batches, in order, in one durable transaction.

        Raises:
            StoreError: the database cannot be written (read-only, disk full...);
                nothing of this call is kept.
        """
        batches = [b for b in batches if b.deleted or b.flows or b.rows or b.kv or b.history]
        if not batches:
            return
        try:
            with self._write("save changes") as conn:
                for batch in batches:
                    for name in batch.deleted:
                        self._delete_flow(conn, name)
                    for name, flow_rows in batch.flows.items():
                        self._write_flow(conn, name, flow_rows)
                    conn.executemany(
                        "INSERT INTO node_state (path, flow, state) VALUES (?, ?, ?)"
                        " ON CONFLICT (path) DO UPDATE SET state = excluded.state",
                        _row_texts(batch.rows),
                    )
                    for key, text in batch.kv.items():
                        self._put_kv(conn, key, text)
                    for op in batch.history:
                        self._write_history(conn, op)
        except BaseException:
            self._prepared_now = None  # the clock did not reach the disk: write it next time
            raise

    def save(
        self,
        bunch: Bunch,
        changes: Iterable[Change],
        *,
        structural_flows: Iterable[str] = frozenset(),
    ) -> None:
        """:meth:`prepare` then :meth:`write`, in the caller's thread.

        Raises:
            StoreError: the database cannot be written; nothing of this call is kept.
        """
        self.write([self.prepare(bunch, changes, structural_flows=structural_flows)])

    def save_flow(self, flow: Flow) -> None:
        """Write a flow whole: its definition and the state of every node
        (but tasks never run, which need no row).

        Raises:
            StoreError: the database cannot be written.
        """
        rows = _flow_rows(flow)
        with self._write(f"save flow {flow.name}") as conn:
            self._write_flow(conn, flow.name, rows)

    def save_all(self, bunch: Bunch) -> None:
        """Replace every flow, the bunch parameters and clock with ``bunch``'s.

        Raises:
            StoreError: the database cannot be written.
        """
        flows = {name: _flow_rows(flow) for name, flow in bunch.flows.items()}
        with self._write("save every flow") as conn:
            conn.execute("DELETE FROM flows")
            conn.execute("DELETE FROM node_state")
            for name, rows in flows.items():
                self._write_flow(conn, name, rows)
            self._put_kv(conn, "bunch.parameters", _kv_text(dict(bunch.parameters)))
            self._put_kv(conn, "bunch.now", _kv_text(bunch.now.isoformat()))

    def clear(self) -> None:
        """Forget every flow and key-value; the job history stays.

        Raises:
            StoreError: the database cannot be written.
        """
        with self._write("clear the store") as conn:
            for table in ("flows", "node_state", "kv"):
                conn.execute(f"DELETE FROM {table}")  # names from the fixed tuple above
        self._prepared_now = None

    def delete_flow(self, name: str) -> None:
        """Forget a flow. Raises StoreError when the database cannot be written."""
        with self._write(f"delete flow {name}") as conn:
            self._delete_flow(conn, name)

    @staticmethod
    def _write_flow(conn: sqlite3.Connection, name: str, flow_rows: _FlowRows) -> None:
        definition, rows = flow_rows
        conn.execute(
            "INSERT INTO flows (name, definition) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
            (name, dumps(definition)),
        )
        conn.execute("DELETE FROM node_state WHERE flow = ?", (name,))
        conn.executemany(
            "INSERT INTO node_state (path, flow, state) VALUES (?, ?, ?)", _row_texts(rows)
        )

    @staticmethod
    def _delete_flow(conn: sqlite3.Connection, name: str) -> None:
        conn.execute("DELETE FROM flows WHERE name = ?", (name,))
        conn.execute("DELETE FROM node_state WHERE flow = ?", (name,))

    def load(self) -> Bunch:
        """The bunch as last saved (an empty bunch for a new store).

        Raises:
            StoreError: the database cannot be read or holds damaged data.
        """
        try:
            # Everything read here stays: no collection needs to rescan it meanwhile.
            with gc_paused(long_lived=True):
                definitions = [
                    loads(text)
                    for (text,) in self._conn.execute("SELECT definition FROM flows ORDER BY rowid")
                ]
                data = {
                    "schema": 1,
                    "parameters": self.get_kv("bunch.parameters", {}),
                    "now": self.get_kv("bunch.now"),
                    "flows": definitions,
                }
                bunch = load_bunch(data, states=self._load_states())
                self._check_fresh_rows(bunch)
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {self.path}: {e}") from e
        except CodecError as e:
            raise StoreError(f"cannot restore from {self.path}: {e}") from e
        self._prepared_now = bunch.now
        return bunch

    def _load_states(self) -> dict[str, dict[str, Any]]:
        """Every node_state row but those of tasks never run: path -> state data.

        A flow written whole has no row for a task never run (see
        :func:`~takler.codec.is_fresh_task`), but a store written by an older
        takler has one for each, all of the same text, FRESH_TASK_STATE_TEXT
        (as has a task saved back in that state since): SQLite leaves those
        out, nine tenths of the time of reading such a table. A task without a row is
        built in that very state (the stored definitions hold no state), so
        nothing is lost; :meth:`_check_fresh_rows` still refuses such a row on
        a family. Each other distinct text is decoded once and its data
        shared, read only (load_bunch copies what it applies).
        """
        decoded: dict[str, dict[str, Any]] = {}
        states = {}
        rows = self._conn.execute(
            "SELECT path, state FROM node_state WHERE state != ?", (FRESH_TASK_STATE_TEXT,)
        )
        for path, text in rows:
            state = decoded.get(text)
            if state is None:
                state = loads(text)
                if len(text) <= 256:  # long texts are rarely shared: keep only short ones
                    decoded[text] = state
            states[path] = state
        return states

    def _check_fresh_rows(self, bunch: Bunch) -> None:
        """Refuse a family or flow whose row holds a task's state, as load_bunch
        would have had :meth:`_load_states` not left those rows out. (Rows of
        tasks never run are not written any more; those of older stores, and
        of tasks saved back in that state, are skipped on read.)"""
        containers: list[str] = []
        todo: list[Family] = list(bunch.flows.values())
        while todo:
            family = todo.pop()
            containers.append(family.node_path)
            todo.extend(c for c in family.children if isinstance(c, Family))
        row = self._conn.execute(
            "SELECT path FROM node_state WHERE state = ?"
            " AND path IN (SELECT value FROM json_each(?)) LIMIT 1",
            (FRESH_TASK_STATE_TEXT, dumps(containers)),
        ).fetchone()
        if row is not None:
            node = bunch.find_node(row[0])
            key = next(iter(FRESH_TASK_STATE))
            raise StoreError(
                f"cannot restore from {self.path}: {row[0]}: {key}: not a state field of a {node.kind}"
            )

    # ---------------------------------------------------------------- key-value

    @staticmethod
    def _put_kv(conn: sqlite3.Connection, key: str, text: str) -> None:
        conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, text),
        )

    def put_kv(self, key: str, value: Any) -> None:
        """Store a small JSON-able value.

        Raises:
            StoreError: the database cannot be written. CodecError: not JSON-able.
        """
        text = _kv_text(value)
        with self._write(f"save {key}") as conn:
            self._put_kv(conn, key, text)

    def get_kv(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, else ``default``.

        Raises:
            StoreError: the database cannot be read or the value is damaged.
        """
        try:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return default if row is None else loads(row[0])["v"]
        except (sqlite3.Error, CodecError, KeyError) as e:
            raise StoreError(f"cannot read {key} from {self.path}: {e}") from e
