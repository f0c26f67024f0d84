"""The SQLite store: durable saves of touched nodes only, restore, history, faults."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from takler import codec
from takler.codec import is_fresh_task
from takler.core import Bunch, Family, Flow, NodeStatus, Task, ops
from takler.server.store import DB_NAME, SCHEMA_VERSION, Store, StoreError

NOW = dt.datetime(2024, 5, 6, 12, 0)


def make_bunch(families: int = 3, tasks: int = 5) -> Bunch:
    flow = Flow("f")
    flow.add_limit("L", 3)
    flow.add_parameter("TAKLER_TRIES", 1)
    for i in range(families):
        fam = flow.add_family(f"g{i}")
        fam.add_in_limit("L")
        fam.add_repeat("integer N 1 3 1")
        for j in range(tasks):
            task = fam.add_task(f"t{j}")
            task.add_event("e")
            task.add_meter("m", 0, 9)
            if j:
                task.add_trigger(f"t{j - 1} == complete")
    other = Flow("other")
    other.add_task("x").add_label("msg", "hi")
    bunch = Bunch()
    bunch.set_parameter("SITE", "here")
    bunch.add_flow(flow)
    bunch.add_flow(other)
    bunch.now = NOW
    return bunch


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as store:
        yield store


def reopen(tmp_path: Path) -> Bunch:
    with Store.open(tmp_path) as fresh:
        return fresh.load()


def dump(bunch: Bunch) -> dict:
    return codec.dump_bunch(bunch, secrets=True)


def test_new_store_loads_empty(store: Store, tmp_path: Path) -> None:
    assert (tmp_path / DB_NAME).exists()
    bunch = store.load()
    assert bunch.flows == {} and bunch.parameters == {}
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_save_after_operations_restores_identically(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain())
    flow = bunch.flows["f"]
    t0, t1 = flow.find_node("g0/t0"), flow.find_node("g0/t1")
    assert isinstance(t0, Task) and isinstance(t1, Task)
    steps = [
        lambda: ops.begin(flow, NOW),
        lambda: ops.start_submission(t0, "pw0", NOW),
        lambda: ops.record_job(t0, "77", {"runner": "local"}),
        lambda: ops.init(t0, NOW),
        lambda: t0.set_event("e"),
        lambda: t0.set_meter("m", 4),
        lambda: ops.complete(t0, NOW),
        lambda: ops.start_submission(t1, "pw1", NOW),
        lambda: ops.abort(t1, "exit 1", NOW),
        lambda: ops.suspend(flow.find_node("g2")),
        lambda: flow.set_limit_max("L", 5),
        lambda: bunch.flows["other"].find_node("x").set_label("msg", "bye"),
        lambda: bunch.set_parameter("SITE", "there"),
    ]
    for step in steps:
        step()
        store.save(bunch, bunch.drain())
        assert dump(reopen(tmp_path)) == dump(bunch)
    assert reopen(tmp_path).flows["f"].limits["L"].maximum == 5


def test_structural_changes_rewrite_the_flow(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain())
    flow = bunch.flows["f"]
    g1 = flow.find_node("g1")
    assert isinstance(g1, Family)
    new = g1.add_task("late_comer")
    new.add_event("x")
    flow.find_node("g0/t2").replace_expression("trigger", "t0 == complete")
    flow.find_node("g0").set_parameter("V", 3)
    ops.delete(flow.find_node("g2"))
    store.save(bunch, bunch.drain())
    assert dump(reopen(tmp_path)) == dump(bunch)
    # An edit that records no change is named by the caller.
    flow.find_node("g1/late_comer").add_meter("p", 0, 3)
    store.save(bunch, bunch.drain(), structural_flows={"f"})
    assert dump(reopen(tmp_path)) == dump(bunch)
    ops.delete(bunch.flows["other"])
    store.save(bunch, bunch.drain())
    assert list(reopen(tmp_path).flows) == ["f"]
    assert (
        store._conn.execute("SELECT count(*) FROM node_state WHERE flow = 'other'").fetchone()[0]
        == 0
    )


def test_only_touched_rows_are_written(store: Store) -> None:
    bunch = make_bunch(families=20, tasks=50)
    store.save(bunch, bunch.drain())
    flow = bunch.flows["f"]
    ops.begin(flow, NOW)
    store.save(bunch, bunch.drain())
    task = flow.find_node("g7/t0")
    assert isinstance(task, Task)
    before = store.total_changes
    changes = ops.start_submission(task, "pw", NOW)
    bunch.drain()
    touched = {c.path for c in changes}
    assert touched == {"/f/g7/t0", "/f/g7", "/f"}  # the task, its family's state, the limit owner
    store.save(bunch, changes)
    assert store.total_changes - before == len(touched)
    before = store.total_changes
    store.save(bunch, task.set_meter("m", 3))
    assert store.total_changes - before == 1


def test_prepare_then_write_in_one_transaction(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    batches = [store.prepare(bunch, bunch.drain())]
    ops.begin(bunch.flows["f"], NOW)
    batches.append(store.prepare(bunch, bunch.drain()))
    task = bunch.find_node("/f/g0/t0")
    assert isinstance(task, Task)
    batches.append(store.prepare(bunch, ops.start_submission(task, "pw", NOW)))
    bunch.drain()
    store.write(batches)
    assert dump(reopen(tmp_path)) == dump(bunch)


def test_save_all_and_clear(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    store.save_all(bunch)
    assert dump(reopen(tmp_path)) == dump(bunch)
    store.put_kv("server_state", "halted")
    store.add_history("/f/g0/t0", 1, "local")
    store.clear()
    assert reopen(tmp_path).flows == {}
    assert store.get_kv("server_state") is None and len(store.history()) == 1


def test_kv_round_trip(store: Store) -> None:
    store.put_kv("server_state", "halted")
    store.put_kv("tokens", {"a": [1, 2]})
    assert store.get_kv("server_state") == "halted"
    assert store.get_kv("tokens") == {"a": [1, 2]}
    assert store.get_kv("missing", 5) == 5


def test_history_round_trip(store: Store, tmp_path: Path) -> None:
    first = store.add_history("/f/g0/t0", 1, "local", rid="101", submitted_at=NOW)
    store.add_history("/f/g0/t1", 1, "slurm", rid="202", submitted_at="2024-05-06T12:01:00")
    store.add_history("/f/g10/t0", 1, "local")
    store.add_history("/other/x", 1, "local")
    assert store.update_history("/f/g0/t0", 1, started_at=NOW, ended_at=NOW, exit="failed", code=3)
    assert store.update_history("/f/g0/t0", 1, reason="exit 3")
    assert not store.update_history("/f/g0/t0", 2, reason="no such try")
    again = store.add_history("/f/g0/t0", 1, "local", rid="103")  # requeued: try 1 again
    assert store.update_history("/f/g0/t0", 1, exit="exited", code=0)
    assert again > first
    with Store.open(tmp_path) as fresh:
        rows = fresh.history("/f/g0")
        assert [r["rid"] for r in rows] == ["101", "202", "103"]
        assert rows[0] == {
            "path": "/f/g0/t0",
            "tryno": 1,
            "runner": "local",
            "rid": "101",
            "submitted_at": "2024-05-06T12:00:00",
            "started_at": "2024-05-06T12:00:00",
            "ended_at": "2024-05-06T12:00:00",
            "exit": "failed",
            "code": 3,
            "reason": "exit 3",
        }
        assert (rows[2]["exit"], rows[2]["code"]) == ("exited", 0)
        assert len(fresh.history()) == 5 and len(fresh.history("/")) == 5
        assert [r["rid"] for r in fresh.history(limit=2)] == [None, "103"]
        assert [r["path"] for r in fresh.history("/f/g0/t0")] == ["/f/g0/t0"] * 2


def test_open_records_are_read_through_their_index(store: Store, tmp_path: Path) -> None:
    store.add_history("/f/a", 1, "local", rid="1")
    store.add_history("/f/b", 1, "local", rid="2")
    store.update_history("/f/a", 1, ended_at=NOW, exit="exited", code=0)
    store.add_history("/f/a", 2, "local", rid="3")
    assert store.open_history() == [("/f/b", 1, "2"), ("/f/a", 2, "3")]
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT path, tryno, rid FROM history WHERE ended_at IS NULL ORDER BY id"
    ).fetchall()
    assert "history_open" in str(plan)
    # A store made before the index gets it at its next open.
    store._conn.execute("DROP INDEX history_open")
    with Store.open(tmp_path) as again:
        assert again._has_index("history_open")
        assert again.open_history() == [("/f/b", 1, "2"), ("/f/a", 2, "3")]


def test_corrupt_file_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    junk = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not a takler store"):
        Store.open(tmp_path)
    assert path.read_bytes() == junk


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a takler store"):
        Store.open(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, newer"):
        Store.open(tmp_path)


def test_damaged_row_is_reported_on_load(store: Store) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain())
    # Insert or replace: a flow written whole may hold no row for the task.
    store._conn.execute(
        "INSERT INTO node_state (path, flow, state) VALUES ('/f/g0/t0', 'f', '{\"tryno\": -4}')"
        " ON CONFLICT (path) DO UPDATE SET state = excluded.state"
    )
    with pytest.raises(StoreError, match="/f/g0/t0: tryno"):
        store.load()


def test_read_only_store_refuses_writes_and_changes_nothing(tmp_path: Path) -> None:
    """Root ignores directory permissions, so SQLite's read-only mode stands in for them."""
    bunch = make_bunch()
    with Store.open(tmp_path) as store:
        store.save(bunch, bunch.drain())
    with Store.open(tmp_path, read_only=True) as ro:
        ops.begin(bunch.flows["f"], NOW)
        with pytest.raises(StoreError, match="readonly") as info:
            ro.save(bunch, bunch.drain())
        assert info.value.code == "read_only_store"
        with pytest.raises(StoreError):
            ro.put_kv("k", 1)
        assert not ro.load().flows["f"].begun


def test_failed_write_rolls_back(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain())
    ops.begin(bunch.flows["f"], NOW)
    batch = store.prepare(bunch, bunch.drain())
    bad = store.prepare(bunch, [])
    bad.kv["x"] = object()  # type: ignore[assignment]  # not bindable: fails mid-transaction
    with pytest.raises(StoreError, match="cannot save changes"):
        store.write([batch, bad])
    assert not reopen(tmp_path).flows["f"].begun
    store.write([batch])
    assert reopen(tmp_path).flows["f"].begun


def test_replaced_flow_keeps_the_bunch_order(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain())
    definition = codec.dump_node(bunch.flows["f"], state=False)
    ops.delete(bunch.flows["f"])
    bunch.add_flow(codec.load_flow(definition))
    store.save(bunch, bunch.drain())
    assert list(reopen(tmp_path).flows) == ["other", "f"]


def _rows(store: Store) -> dict[str, str]:
    return dict(store._conn.execute("SELECT path, state FROM node_state"))


def test_rows_of_tasks_never_run_are_left_out(store: Store, tmp_path: Path) -> None:
    # Most tasks of a big flow never ran: a flow written whole has no row for
    # them (the definition builds them so), and load() restores them all the same.
    bunch = make_bunch()
    plain = bunch.flows["other"].add_family("plain")
    for name in ("a", "b", "c"):
        plain.add_task(name).add_trigger("x == complete")
    for path in ("/f/g1/t2", "/other/plain/b"):
        task = bunch.find_node(path)
        assert isinstance(task, Task)
        ops.force(task, "complete")
    store.save(bunch, bunch.drain(), structural_flows=bunch.flows)
    fresh = {"/other/plain/a", "/other/plain/c"}
    nodes = {n.node_path for flow in bunch.flows.values() for n in flow.walk()}
    rows = _rows(store)
    assert rows.keys() == nodes - fresh  # families, flows, tasks with state
    assert codec.FRESH_TASK_STATE_TEXT not in rows.values()
    assert dump(reopen(tmp_path)) == dump(bunch)
    # save_flow and save_all leave them out too.
    store.save_flow(bunch.flows["other"])
    assert _rows(store).keys() == nodes - fresh
    store.save_all(bunch)
    assert _rows(store).keys() == nodes - fresh
    # A store written by an older takler holds their rows: they restore the same.
    store._conn.executemany(
        "INSERT INTO node_state (path, flow, state) VALUES (?, 'other', ?)",
        [(path, codec.FRESH_TASK_STATE_TEXT) for path in sorted(fresh)],
    )
    assert _rows(store).keys() == nodes
    assert dump(reopen(tmp_path)) == dump(bunch)


def test_a_task_back_in_the_fresh_state_restores_exactly(store: Store, tmp_path: Path) -> None:
    bunch = make_bunch()
    a = bunch.flows["other"].add_task("a")
    store.save(bunch, bunch.drain(), structural_flows=bunch.flows)
    assert "/other/a" not in _rows(store)
    # Run, save, requeue, save: touched saves and a whole rewrite.
    ops.force(a, "complete")
    store.save(bunch, bunch.drain())
    assert "/other/a" in _rows(store)
    assert dump(reopen(tmp_path)) == dump(bunch)
    ops.force(a, "unknown")
    store.save(bunch, bunch.drain())
    assert dump(reopen(tmp_path)) == dump(bunch)
    ops.force(a, "complete")
    store.save(bunch, bunch.drain(), structural_flows={"other"})
    assert dump(reopen(tmp_path)) == dump(bunch)
    # A task exactly as built again (no state_since either): a touched save
    # upserts its row with the fresh text, which load() skips...
    ops.force(a, "unknown")
    a.state_since = None
    assert codec.dump_node_state(a) == codec.FRESH_TASK_STATE
    store.save(bunch, bunch.drain())
    assert _rows(store)["/other/a"] == codec.FRESH_TASK_STATE_TEXT
    assert dump(reopen(tmp_path)) == dump(bunch)
    # ... and a rewrite deletes the row it held while complete.
    ops.force(a, "complete")
    store.save(bunch, bunch.drain(), structural_flows={"other"})
    assert "/other/a" in _rows(store)
    ops.force(a, "unknown")
    a.state_since = None
    bunch.drain()
    store.save(bunch, [], structural_flows={"other"})
    assert "/other/a" not in _rows(store)
    assert dump(reopen(tmp_path)) == dump(bunch)


def _fresh_task_cases() -> dict[str, Callable[[Task], object]]:
    """One change per field of a Task (trigger and complete twice: freed or not)."""
    at = dt.datetime(2024, 5, 6)
    return {
        "name": lambda t: setattr(t, "name", "other"),
        "parent": lambda t: Flow("p").add_task(t),
        "suspended": lambda t: setattr(t, "suspended", True),
        "defstatus": lambda t: t.set_defstatus("complete"),
        "parameters": lambda t: t.add_parameter("V", 1),
        "events": lambda t: t.add_event("e"),
        "meters": lambda t: t.add_meter("m", 0, 3),
        "labels": lambda t: t.add_label("l"),
        "limits": lambda t: t.add_limit("L", 2),
        "inlimits": lambda t: t.add_in_limit("L"),
        "trigger": lambda t: t.add_trigger("1 == 1"),
        "trigger freed": lambda t: setattr(t.add_trigger("1 == 1"), "freed", True),
        "complete_expr": lambda t: t.add_complete("1 == 1"),
        "complete_expr freed": lambda t: setattr(t.add_complete("1 == 1"), "freed", True),
        "repeat": lambda t: t.add_repeat("integer N 1 3 1"),
        "times": lambda t: t.add_time("10:00"),
        "late": lambda t: t.add_late("-c +01:00"),
        "autocancel": lambda t: setattr(t, "autocancel", "+01:00"),
        "state_since": lambda t: setattr(t, "state_since", at),
        "flags": lambda t: setattr(t, "flags", frozenset({"late"})),
        "_path": lambda t: t.node_path,
        "_status": lambda t: setattr(t, "_status", NodeStatus.complete),
        "tryno": lambda t: setattr(t, "tryno", 1),
        "password": lambda t: setattr(t, "password", "pw"),
        "rid": lambda t: setattr(t, "rid", "1"),
        "job": lambda t: setattr(t, "job", {}),
        "reason": lambda t: setattr(t, "reason", "r"),
        "submitted_at": lambda t: setattr(t, "submitted_at", at),
        "active_at": lambda t: setattr(t, "active_at", at),
    }


def test_fresh_task_agrees_with_dump_node_state() -> None:
    # The store's quick test reads the fields dump_node_state reads: a field
    # added to Task must be added here, and to is_fresh_task if it is state.
    cases = _fresh_task_cases()
    assert {f.name for f in attrs.fields(Task)} <= {c.split()[0] for c in cases}
    assert (
        is_fresh_task(Task("t")) and not is_fresh_task(Flow("f")) and not is_fresh_task(Family("g"))
    )
    for field, change in cases.items():
        task = Task("t")
        change(task)
        expected = codec.dump_node_state(task) == codec.FRESH_TASK_STATE
        assert is_fresh_task(task) is expected, field


def test_a_family_row_with_task_state_is_still_refused(store: Store) -> None:
    bunch = make_bunch()
    store.save(bunch, bunch.drain(), structural_flows=bunch.flows)
    store._conn.execute(
        "UPDATE node_state SET state = ? WHERE path = '/f/g0'", (codec.FRESH_TASK_STATE_TEXT,)
    )
    with pytest.raises(StoreError, match="/f/g0: status"):
        store.load()
