"""Durability, in one process: a server on a home, stopped, and another started
on the same home. Real local jobs (bash) keep running across the restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from takler import codec
from takler.client.child import ChildClient, ChildCommandError
from takler.client.client import RemoteError, open_client
from takler.core import Bunch, Flow, NodeStatus, ops
from takler.core.change import ChangeKind
from takler.core.node import Task
from takler.protocol import Delta, Snapshot
from takler.server import TaklerServer
from takler.server.jobs import new_password
from takler.server.scheduler import Scheduler, note_time_resets
from takler.server.store import SCHEMA_VERSION, Store

FIXTURES = Path(__file__).parent.parent / "fixtures"
HEAD = '{% include "head.takler" %}\n'
TAIL = '{% include "tail.takler" %}\n'
WAIT_LIMIT = 20.0


def script(tmp_path: Path, name: str, body: str, *, head: bool = True) -> Path:
    path = tmp_path / "scripts" / f"{name}.takler"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body + "\n" + TAIL if head else body + "\n")
    return path


def gate_script(tmp_path: Path, marker: Path) -> Path:
    """A job that goes active, then finishes once ``marker`` exists."""
    return script(tmp_path, f"gate_{marker.name}", f"while [ ! -e {marker} ]; do sleep 0.05; done")


@pytest.fixture(autouse=True)
def reap_jobs() -> Iterator[None]:
    """Jobs outlive the server that started them; here that server is this process."""
    yield
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@asynccontextmanager
async def running(home: Path, port: int = 0, **kwargs: Any) -> AsyncIterator[TaklerServer]:
    """A started, running server; stopped (as by SIGTERM, jobs left running) on exit."""
    server = TaklerServer(port=port, home=home, console=False, **kwargs)
    await server.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await trio.testing.wait_all_tasks_blocked()  # running: jobs adopted, scheduler waiting
        try:
            yield server
        finally:
            server.stop_now()


async def wait_for(server: TaklerServer, predicate: Any) -> None:
    with trio.fail_after(WAIT_LIMIT):
        while not predicate():
            await server.wait_changed()


async def wait_exit(pid: int) -> None:
    """Wait for a job process (a child of this process) to end; reap it."""
    pidfd = os.pidfd_open(pid)
    try:
        with trio.fail_after(WAIT_LIMIT):
            await trio.lowlevel.wait_readable(pidfd)
        _reap(pidfd)
    finally:
        os.close(pidfd)


def _reap(pidfd: int) -> None:
    os.waitid(os.P_PIDFD, pidfd, os.WEXITED)  # it has ended: returns at once


def task(server: TaklerServer, path: str) -> Task:
    node = server.bunch.find_node(path)
    assert isinstance(node, Task)
    return node


def state_dump(server: TaklerServer) -> dict[str, Any]:
    data = codec.dump_bunch(server.bunch, secrets=True)
    data.pop("now")
    data["parameters"].pop("TAKLER_PORT")  # where this server listens
    return data


def base_flow(tmp_path: Path, name: str) -> Flow:
    flow = Flow(name)
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    flow.add_parameter("TAKLER_TRIES", 1)
    return flow


# ---------------------------------------------------------------- restart


async def test_restart_restores_every_state_and_readopts_running_jobs(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "go"
    flow = base_flow(tmp_path, "s")
    flow.add_limit("L", 3)
    flow.add_label("note", "")
    done = flow.add_task("done")
    done.add_event("e")
    done.add_meter("m", 0, 9)
    done.add_label("msg", "")
    done.add_parameter(
        "TAKLER_SCRIPT",
        script(tmp_path, "done", "takler_event e\ntakler_meter m 7\ntakler_label msg hi"),
    )
    failed = flow.add_task("failed")
    failed.add_parameter("TAKLER_SCRIPT", script(tmp_path, "failed", "exit 3"))
    runners = flow.add_family("run")
    runners.add_in_limit("L")
    runners.add_repeat("integer N 1 3 1")
    active = runners.add_task("active")
    active.add_parameter("TAKLER_SCRIPT", gate_script(tmp_path, marker))
    submitted = runners.add_task("submitted")  # no head: never reports init
    submitted.add_parameter("TAKLER_SCRIPT", script(tmp_path, "mute", "exec sleep 60", head=False))
    queued = flow.add_task("queued")
    queued.add_trigger("failed == complete")
    suspended = flow.add_task("suspended")
    suspended.add_trigger("done == complete and failed == complete")
    timed = flow.add_task("timed")
    timed.add_time("23:59")
    timed.add_trigger("failed == complete")

    async with running(home) as first:
        port = first.port
        first.add_flows([flow])
        async with open_client("127.0.0.1", port, token=first.token) as client:
            await client.call("suspend", path="/s/suspended")
            await client.call("begin", path="/s")
            await wait_for(first, lambda: (
                done.status, failed.status, active.status, submitted.status
            ) == (NodeStatus.complete, NodeStatus.aborted, NodeStatus.active, NodeStatus.submitted)
                and submitted.job is not None)  # fmt: skip
            await client.call(
                "alter", path="/s", action="change", kind="label", name="note", value="kept"
            )
            await client.call("shutdown")
        before = state_dump(first)

    async with running(home, port) as second:
        assert state_dump(second) == before
        restored = {t.name: t.state for t in second.bunch.flows["s"].tasks()}
        assert restored == {
            "done": NodeStatus.complete, "failed": NodeStatus.aborted,
            "active": NodeStatus.active, "submitted": NodeStatus.submitted,
            "queued": NodeStatus.queued, "suspended": NodeStatus.suspended,
            "timed": NodeStatus.queued,
        }  # fmt: skip
        s = second.bunch.flows["s"]
        assert s.limits["L"].value == 2 and s.labels["note"].value == "kept"
        assert set(second.jobs.watches) == {"/s/run/active", "/s/run/submitted"}
        async with open_client("127.0.0.1", port, token=second.token) as client:
            assert (await client.call("ping"))["server_state"] == "shutdown"
            await client.call("restart")
            marker.touch()
            await wait_for(second, lambda: task(second, "/s/run/active").tryno == 1
                           and task(second, "/s/run/active").status is NodeStatus.complete)  # fmt: skip
            await client.call("kill", path="/s/run/submitted")
            await wait_for(
                second, lambda: task(second, "/s/run/submitted").status is NodeStatus.aborted
            )
            # `complete` comes before the job's process ends: its row is
            # closed once the watcher sees the end.
            await wait_for(second, lambda: "/s/run/active" not in second.jobs.watches)
            history = await client.call("history", path="/s/run/active")
        assert "killed" in (task(second, "/s/run/submitted").reason or "")
    [row] = history
    assert row["tryno"] == 1 and row["runner"] == "local"
    assert row["submitted_at"] < row["started_at"] <= row["ended_at"]
    assert row["exit"] == "lost" and row["code"] is None  # not our child: no exit code


async def test_job_completing_while_the_server_is_down_is_accepted(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "go"
    flow = base_flow(tmp_path, "d")
    flow.add_task("t").add_parameter("TAKLER_SCRIPT", gate_script(tmp_path, marker))
    async with running(home) as first:
        port = first.port
        first.add_flows([flow], begin=True)
        await wait_for(first, lambda: task(first, "/d/t").status is NodeStatus.active)
        pid = int(task(first, "/d/t").rid or 0)
    marker.touch()  # the job finishes now and retries `complete` until a server answers
    async with running(home, port) as second:
        await wait_for(second, lambda: task(second, "/d/t").status is NodeStatus.complete)
        assert task(second, "/d/t").tryno == 1
    await wait_exit(pid)  # the job itself, after its complete was accepted
    output = (tmp_path / "jobs" / "d" / "t.1").read_text()
    assert "refused" not in output and "failed" not in output


async def test_a_job_gone_while_the_server_was_down_is_aborted(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "never"
    flow = base_flow(tmp_path, "g")
    flow.add_task("t").add_parameter("TAKLER_SCRIPT", gate_script(tmp_path, marker))
    async with running(home) as first:
        port = first.port
        first.add_flows([flow], begin=True)
        await wait_for(first, lambda: task(first, "/g/t").status is NodeStatus.active)
        pid = int(task(first, "/g/t").rid or 0)
    os.killpg(pid, signal.SIGKILL)  # no trap runs: the job cannot report
    await wait_exit(pid)
    async with running(home, port) as second:
        await wait_for(second, lambda: task(second, "/g/t").status is NodeStatus.aborted)
        reason = task(second, "/g/t").reason or ""
        async with open_client("127.0.0.1", second.port, token=second.token) as client:
            [row] = await client.call("history", path="/g/t")
    assert f"job process {pid} no longer exists" in reason
    assert row["exit"] == "lost" and row["reason"] == reason and row["ended_at"]


async def test_history_records_every_try_with_start_end_and_exit(tmp_path: Path) -> None:
    flow = base_flow(tmp_path, "h")
    flow.set_parameter("TAKLER_TRIES", 2)
    flow.add_task("flaky").add_parameter(
        "TAKLER_SCRIPT",
        script(tmp_path, "flaky", 'if [ "{{ TAKLER_TRYNO }}" = 1 ]; then exit 4; fi'),
    )
    async with running(tmp_path / "home") as server:
        server.add_flows([flow], begin=True)
        with trio.fail_after(WAIT_LIMIT):
            while True:
                changed = server._changed  # taken first: a commit during the query wakes us
                rows = await server.store_call(server.store.history, "/h")
                if len(rows) == 2 and all(r["ended_at"] for r in rows):
                    break
                assert changed is not None
                await changed.wait()
    first, second = rows
    assert (first["tryno"], second["tryno"]) == (1, 2)
    assert all(r["submitted_at"] and r["started_at"] and r["ended_at"] for r in rows)
    assert first["exit"] == "failed" and first["code"] == 4 and "code 4" in first["reason"]
    assert second["exit"] == "exited" and second["code"] == 0
    assert first["rid"] != second["rid"]


async def test_a_history_read_waits_for_records_queued_behind_a_write(tmp_path: Path) -> None:
    # A record a commit has queued while another commit's write is under way
    # was not yet in the store when the write ended and a read took the lock.
    async with running(tmp_path / "home") as server:
        store = server.store
        real_write, release = store.write, threading.Event()

        def slow_write(batches: Any) -> None:
            release.wait(WAIT_LIMIT)
            real_write(batches)

        store.write = slow_write  # type: ignore[method-assign]
        rows: list[dict[str, Any]] = []

        async def read() -> None:
            rows.extend(await server.store_call(store.history, "/x"))

        now = server.now()
        async with trio.open_nursery() as nursery:
            server.note_history("add", "/x/t", 1, "42", runner="local", submitted_at=now)
            nursery.start_soon(server.commit)  # its write waits for the release
            await trio.testing.wait_all_tasks_blocked()
            server.note_history("update", "/x/t", 1, "42", ended_at=now, exit="exited")
            nursery.start_soon(server.commit)  # queued behind the write
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
    [row] = rows
    assert row["exit"] == "exited" and row["ended_at"] == now.isoformat()


async def test_records_left_open_by_a_killed_server_are_closed_at_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    flow = base_flow(tmp_path, "k")
    flow.set_parameter("TAKLER_TRIES", 2)
    flow.add_task("t").add_parameter(
        "TAKLER_SCRIPT",
        script(tmp_path, "t", 'if [ "{{ TAKLER_TRYNO }}" = 1 ]; then exit 4; fi'),
    )
    async with running(home) as first:
        first.add_flows([flow], begin=True)
        await wait_for(first, lambda: task(first, "/k/t").status is NodeStatus.complete)
        completed_at = task(first, "/k/t").state_since
    assert completed_at is not None
    # What a server killed between seeing the jobs end and its next commit leaves.
    conn = sqlite3.connect(home / "takler.db")
    with conn:
        conn.execute("UPDATE history SET ended_at = NULL, exit = NULL, code = NULL, reason = NULL")
    conn.close()
    async with running(home) as second:
        restarted_at = second.now()
        rows = await second.store_call(second.store.history, "/k")
        assert await second.store_call(second.store.open_history) == []
    earlier, last = rows
    assert (earlier["tryno"], last["tryno"]) == (1, 2)
    assert all(r["exit"] == "lost" and "no server watched" in r["reason"] for r in rows)
    # The current try ended when its task completed; the earlier one by the restart.
    assert last["ended_at"] == completed_at.isoformat()
    assert earlier["ended_at"] <= restarted_at.isoformat()
    assert earlier["ended_at"] > completed_at.isoformat()


async def test_attributes_added_and_deleted_by_alter_are_told_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    flow = base_flow(tmp_path, "a")
    t = flow.add_task("t")
    t.add_event("read")
    t.add_meter("gone", 0, 5)
    flow.add_task("w").add_trigger("t:read")
    alters = [
        {"action": "add", "kind": "label", "name": "note", "value": "hello"},
        {"action": "add", "kind": "meter", "name": "m", "value": "0 10 5"},
        {"action": "add", "kind": "event", "name": "e", "value": "set"},
        {"action": "delete", "kind": "meter", "name": "gone"},
    ]
    async with running(home) as first:
        first.add_flows([flow])
        async with open_client("127.0.0.1", first.port, token=first.token) as client:
            async with client.subscribe("/a") as sub:
                assert isinstance(await sub.__anext__(), Snapshot)
                for args in alters:
                    await client.call("alter", path="/a/t", **args)
                with pytest.raises(RemoteError) as info:
                    await client.call("alter", path="/a/t", action="delete", kind="event", name="read")
                assert "/a/w" in info.value.message  # its trigger reads the event
                with pytest.raises(RemoteError) as info:
                    await client.call("alter", path="/a/t", action="add", kind="label", name="note")
                assert info.value.code == "duplicate"
                with pytest.raises(RemoteError) as info:
                    await client.call(
                        "alter", path="/a/t", action="add", kind="meter", name="x", value="9 1"
                    )
                assert "above maximum" in info.value.message
                told: list[dict[str, Any]] = []
                with trio.fail_after(WAIT_LIMIT):
                    while len(told) < len(alters):
                        message = await sub.__anext__()
                        assert isinstance(message, Delta)
                        told += [c for c in message.changes if c["kind"] == "attribute"]
    assert [(c["name"], (c["new"] or c["old"])["kind"], c["new"] is None) for c in told] == [
        ("note", "label", False), ("m", "meter", False), ("e", "event", False),
        ("gone", "meter", True),
    ]  # fmt: skip
    assert told[1]["new"]["threshold"] == 5 and told[2]["new"]["value"] is True
    async with running(home) as second:
        kept = task(second, "/a/t")
        assert kept.labels["note"].value == "hello"
        assert (kept.meters["m"].minimum, kept.meters["m"].maximum, kept.meters["m"].threshold) == (
            0, 10, 5,
        )  # fmt: skip
        assert kept.events["e"].value is True and "read" in kept.events
        assert "gone" not in kept.meters


async def test_alter_change_repeat_moves_it_wakes_its_readers_and_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    flow = base_flow(tmp_path, "r")
    fam = flow.add_family("f")
    fam.add_repeat("date YMD 20240101 20240110 1")
    fam.add_task("held").add_parameter("TAKLER_SCRIPT", script(tmp_path, "held", "true"))
    after = flow.add_task("after")
    after.add_trigger("f:YMD >= 20240105")
    after.add_parameter("TAKLER_SCRIPT", script(tmp_path, "after", "true"))
    async with running(home) as first:
        first.add_flows([flow])
        async with open_client("127.0.0.1", first.port, token=first.token) as client:
            await client.call("suspend", path="/r/f/held")
            await client.call("begin", path="/r")
            with pytest.raises(RemoteError) as info:
                await client.call("alter", path="/r/f", kind="repeat", value="20240200")
            assert info.value.code == "bad_repeat"
            with pytest.raises(RemoteError) as info:
                await client.call("alter", path="/r/after", kind="repeat", value="1")
            assert "no repeat" in info.value.message
            assert after.status is NodeStatus.queued
            await client.call("alter", path="/r/f", kind="repeat", value="20240105")
            await wait_for(first, lambda: after.status is NodeStatus.complete)
    async with running(home) as second:
        repeat = second.bunch.find_node("/r/f").repeat
        assert repeat is not None and repeat.value == 20240105


# ---------------------------------------------------------------- checkpoint and restore


async def test_checkpoint_then_restore_gives_the_same_state(tmp_path: Path) -> None:
    flow = base_flow(tmp_path, "c")
    t = flow.add_task("t")
    t.add_event("e")
    t.add_parameter("TAKLER_SCRIPT", script(tmp_path, "c", "takler_event e"))
    flow.add_task("later").add_trigger("t:e and 1 == 0")
    async with running(tmp_path / "home") as server:
        server.add_flows([flow], begin=True)
        await wait_for(server, lambda: task(server, "/c/t").status is NodeStatus.complete)
        async with open_client("127.0.0.1", server.port, token=server.token) as client:
            await client.call("suspend", path="/c/later")
            checkpoint = await client.call("checkpoint")
        before = state_dump(server)
    file = tmp_path / "checkpoint.json"
    file.write_text(json.dumps(checkpoint))
    async with running(tmp_path / "other", restore=file) as restored:
        assert state_dump(restored) == before
    async with running(tmp_path / "other") as again:  # the restore went into the new store
        assert state_dump(again) == before


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["full", "read_only"])
async def test_a_store_that_cannot_write_refuses_changes_then_recovers(
    tmp_path: Path, fault: str
) -> None:
    home = tmp_path / "home"
    flow = base_flow(tmp_path, "f")
    flow.add_label("l", "")
    flow.add_task("t").add_trigger("1 == 0")
    async with running(home) as server:
        server.add_flows([flow])
        conn = server.store._conn
        async with open_client("127.0.0.1", server.port, token=server.token) as client:
            await client.call(
                "alter", path="/f", action="change", kind="label", name="l", value="ok"
            )
            if fault == "full":  # the database may not grow by one more page
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {pages}")
            else:
                conn.execute("PRAGMA query_only = 1")
            with pytest.raises(RemoteError) as info:
                await client.call(
                    "alter", path="/f", action="change", kind="label", name="l", value="x" * 20000
                )
            assert info.value.code == "read_only_store"
            ping = await client.call("ping")
            assert ping["read_only"] and ping["server_state"] == "running"
            with pytest.raises(RemoteError) as info:
                await client.call("suspend", path="/f/t")
            assert (
                info.value.code == "read_only_store" and "cannot be written" in info.value.message
            )
            why = await client.call("why", path="/f/t")
            assert why["reasons"][0].startswith("the store cannot be written")
        assert server.read_only_reason is not None
        if fault == "full":
            conn.execute("PRAGMA max_page_count = 1073741823")
        else:
            conn.execute("PRAGMA query_only = 0")
        async with open_client("127.0.0.1", server.port, token=server.token) as client:
            await client.call("suspend", path="/f/t")  # retries the store first: writable again
            assert (await client.call("ping"))["read_only"] is None
    with Store.open(home) as store:
        stored = store.load()
    assert stored.flows["f"].labels["l"].value == "x" * 20000  # queued, written on recovery
    assert stored.flows["f"].find_node("t").suspended


async def test_child_commands_wait_while_the_store_cannot_write(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "go"
    flow = base_flow(tmp_path, "w")
    flow.add_task("t").add_parameter("TAKLER_SCRIPT", gate_script(tmp_path, marker))
    async with running(home) as server:
        server.add_flows([flow], begin=True)
        t = task(server, "/w/t")
        await wait_for(server, lambda: t.status is NodeStatus.active)
        server.store._conn.execute("PRAGMA query_only = 1")
        async with open_client("127.0.0.1", server.port, token=server.token) as client:
            with pytest.raises(RemoteError) as info:  # the write that finds the store failing
                await client.call(
                    "alter", path="/w", action="add", kind="variable", name="V", value="1"
                )
        assert info.value.code == "read_only_store" and server.read_only_reason
        child = ChildClient(
            "127.0.0.1", server.port, "/w/t", t.password or "", t.tryno, timeout=0.5
        )
        with pytest.raises(ChildCommandError) as info:
            await trio.to_thread.run_sync(child.complete)
        assert info.value.code == "unreachable" and "503" in str(info.value)
        assert t.status is NodeStatus.active  # refused before anything changed
        server.store._conn.execute("PRAGMA query_only = 0")
        marker.touch()  # the job's complete is accepted as soon as the store writes again
        await wait_for(server, lambda: t.status is NodeStatus.complete)
        assert server.read_only_reason is None


# ---------------------------------------------------------------- time attributes


def test_time_latches_and_requeue_resets_reach_the_store(tmp_path: Path) -> None:
    monday = dt.datetime(2024, 5, 6, 23, 0)
    bunch = Bunch()
    bunch.now = monday
    flow = Flow("tm")
    flow.add_task("gate")
    late = flow.add_task("late")
    late.add_day("monday")
    late.add_trigger("gate == complete")
    rel = flow.add_task("rel")
    rel.add_time("+00:30")
    rel.add_trigger("gate == complete")
    bunch.add_flow(flow)
    ops.begin(flow, monday)
    store = Store.open(tmp_path)
    submitted: list[Task] = []

    async def commit() -> None:
        store.save(bunch, bunch.drain())

    scheduler = Scheduler(
        bunch, lambda: bunch.now, submitted.append, commit, lambda: True, new_password
    )
    scheduler.rescan()
    trio.run(scheduler.step)
    assert [t.name for t in submitted] == ["gate"]
    assert late.times[0].free  # latched on monday, though its trigger holds it
    bunch.now = monday + dt.timedelta(minutes=40)
    ops.requeue(rel, bunch.now)
    note_time_resets(rel)
    assert any(c.kind is ChangeKind.time for c in bunch.journal)
    trio.run(commit)
    again = Store.open(tmp_path).load()
    assert again.flows["tm"].find_node("late").times[0].free  # a tuesday restart still runs it
    assert again.flows["tm"].find_node("rel").times[0].base == bunch.now
    store.close()


# ---------------------------------------------------------------- older stores


def _schema1_home(tmp_path: Path) -> Path:
    home = tmp_path / "old"
    home.mkdir()
    conn = sqlite3.connect(home / "takler.db")
    conn.executescript((FIXTURES / "store-schema1.sql").read_text())
    conn.close()
    return home


def test_a_schema_1_store_is_upgraded_and_loads(tmp_path: Path) -> None:
    home = _schema1_home(tmp_path)
    with Store.open(home) as store:
        bunch = store.load()
        assert store.get_kv("server.state") == "shutdown" and store.get_kv("server_state") is None
        history = store.history()
    version = sqlite3.connect(home / "takler.db").execute("SELECT version FROM schema_version")
    assert version.fetchone()[0] == SCHEMA_VERSION == 2
    old = bunch.flows["old"]
    states = {t.node_path: (t.status, t.tryno) for t in old.tasks()}
    assert states == {
        "/old/g/done": (NodeStatus.complete, 1), "/old/g/running": (NodeStatus.active, 1),
        "/old/failed": (NodeStatus.aborted, 2), "/old/held/waiting": (NodeStatus.queued, 0),
    }  # fmt: skip
    done = old.find_node("g/done")
    assert (done.events["e"].value, done.meters["m"].value, done.labels["msg"].value) == (
        True,
        7,
        "hello",
    )
    assert old.find_node("held").suspended and old.limits["L"].holders == {"/old/g/running": 1}
    assert old.find_node("g/running").job == {
        "runner": "local",
        "rid": "102",
        "started": 6.0,
        "extra": {},
    }
    assert [(r["path"], r["exit"]) for r in history] == [
        ("/old/g/done", "exited"),
        ("/old/g/running", None),
    ]


async def test_a_server_starts_on_a_schema_1_store(tmp_path: Path) -> None:
    home = _schema1_home(tmp_path)
    server = TaklerServer(port=0, home=home, console=False)
    await server.start()
    try:
        assert server.state.value == "shutdown"
        assert task(server, "/old/failed").reason == "exit 2"
    finally:
        await server.aclose()


async def test_a_server_starts_from_a_schema_0_checkpoint(tmp_path: Path) -> None:
    fixture = FIXTURES / "checkpoint-schema0.json"
    server = TaklerServer(port=0, home=tmp_path / "home", console=False, restore=fixture)
    await server.start()
    try:
        flow = server.bunch.flows["old"]
        assert flow.begun and flow.limits["jobs"].holders == {"/old/model/run": 1}
        assert flow.find_node("ingest").events["got"].value is True
    finally:
        await server.aclose()
    with Store.open(tmp_path / "home") as store:  # the checkpoint became the store
        assert store.load().flows["old"].limits["jobs"].holders == {"/old/model/run": 1}
