"""End to end, in one process: a real server on a loopback port, real local
jobs (bash, talking HTTP to the server), the real async client."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from takler.client.child import ChildClient, ChildCommandError
from takler.client.client import RemoteError, open_client
from takler.core import Flow, NodeStatus
from takler.runners.base import JobHandle, JobSpec
from takler.runners.local import LocalRunner
from takler.server import TaklerServer

pytestmark = pytest.mark.e2e

HEAD = '{% include "head.takler" %}\n'
TAIL = '{% include "tail.takler" %}\n'
WAIT_LIMIT = 20.0


def script(home: Path, name: str, body: str) -> Path:
    path = home / "scripts" / f"{name}.takler"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body + "\n" + TAIL)
    return path


async def wait_for(server: TaklerServer, predicate) -> None:  # type: ignore[no-untyped-def]
    """Wait, event-driven, until ``predicate()`` holds; bounded by WAIT_LIMIT."""
    with trio.fail_after(WAIT_LIMIT):
        while not predicate():
            await server.wait_changed()


def state(server: TaklerServer, path: str) -> NodeStatus:
    return server.bunch.find_node(path).state


@pytest.fixture
async def served(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[TaklerServer]:
    server = TaklerServer(port=0, home=tmp_path / "home", console=False)
    await server.start()
    nursery.start_soon(server.run)
    yield server
    server.stop_now()


@pytest.fixture
async def client(served: TaklerServer):  # type: ignore[no-untyped-def]
    async with open_client("127.0.0.1", served.port, token=served.token) as c:
        yield c


def base_flow(tmp_path: Path, name: str) -> Flow:
    flow = Flow(name)
    flow.add_parameter("TAKLER_HOME", tmp_path / "jobs")
    return flow


async def test_triggers_events_meters_and_labels_across_families(
    tmp_path: Path, served: TaklerServer, client
) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "x")
    a = flow.add_family("a")
    producer = a.add_task("producer")
    producer.add_event("ready")
    producer.add_meter("step", 0, 5)
    producer.add_label("info", "")
    producer.add_parameter(
        "TAKLER_SCRIPT",
        script(
            tmp_path,
            "producer",
            "takler_label info 'half way'\ntakler_event ready\n"
            "for i in 1 2 3 4 5; do takler_meter step $i; done",
        ),
    )
    b = flow.add_family("b")
    on_event = b.add_task("on_event")
    on_event.add_trigger("../a/producer:ready")
    on_meter = b.add_task("on_meter")
    on_meter.add_trigger("/x/a/producer:step >= 3")
    c = flow.add_family("c")
    c.add_trigger("a == complete and b == complete")
    c.add_task("last")
    trivial = script(tmp_path, "trivial", "true")
    for task in (on_event, on_meter, c.find_node("last")):
        task.add_parameter("TAKLER_SCRIPT", trivial)
    served.add_flows([flow])
    await client.call("begin", path="/x")
    await wait_for(served, lambda: flow.state is NodeStatus.complete)
    assert producer.labels["info"].value == "half way"
    assert producer.meters["step"].value == 5
    assert producer.events["ready"].value is True
    shown = await client.call("show", path="/x/a/producer")
    assert shown["state"] == "complete"


async def test_a_limit_holds_jobs_back(tmp_path: Path, served: TaklerServer, client) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "lim")
    flow.add_limit("L", 2)
    fam = flow.add_family("f")
    fam.add_in_limit("L")
    fam.add_parameter("TAKLER_SCRIPT", script(tmp_path, "short", "sleep 0.2"))
    for i in range(6):
        fam.add_task(f"t{i}")
    served.add_flows([flow])
    running_max = 0
    sub = served.hub.open_subscription("/lim")

    async def watch() -> None:
        nonlocal running_max
        async for _ in sub:
            running = sum(
                1 for t in flow.tasks() if t.status in (NodeStatus.submitted, NodeStatus.active)
            )
            running_max = max(running_max, running)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await client.call("begin", path="/lim")
        await wait_for(served, lambda: flow.state is NodeStatus.complete)
        sub.close()
        nursery.cancel_scope.cancel()
    assert running_max == 2
    assert flow.limits["L"].value == 0


@pytest.mark.parametrize(
    ("job", "why"),
    [("not-a-folder/stuck.job", "Not a directory"), ("", "it names no file")],
)
async def test_a_job_file_that_cannot_be_written_aborts_its_task_alone(
    tmp_path: Path, served: TaklerServer, client, job: str, why: str
) -> None:  # type: ignore[no-untyped-def]
    # The job file is written by the server's own loop: a failure must abort
    # that task with the reason and leave the server and the other task going.
    (tmp_path / "not-a-folder").write_text("")
    flow = base_flow(tmp_path, "unwritable")
    flow.add_parameter("TAKLER_TRIES", 1)
    flow.add_parameter("TAKLER_SCRIPT", script(tmp_path, "fine", "true"))
    stuck = flow.add_task("stuck")
    stuck.add_parameter("TAKLER_JOB", str(tmp_path / job) if job else "")
    fine = flow.add_task("fine")
    served.add_flows([flow])
    await client.call("begin", path="/unwritable")
    await wait_for(
        served,
        lambda: fine.status is NodeStatus.complete and stuck.status is NodeStatus.aborted,
    )
    assert stuck.reason.startswith("submission failed: cannot write job file ")
    assert stuck.reason.endswith(why)
    assert (await client.call("ping")) is not None


async def test_a_job_file_is_rewritten_in_place_unless_its_job_still_runs(  # type: ignore[no-untyped-def]
    tmp_path: Path, served: TaklerServer, client
) -> None:
    # In place, as ecFlow does, no inode is created or freed per job; but a
    # job still running from the file (a forced requeue) keeps its own copy.
    flow = base_flow(tmp_path, "ip")
    flow.add_parameter("TAKLER_TRIES", 1)
    go = tmp_path / "go"
    go.touch()
    t = flow.add_task("t")
    t.add_parameter("TAKLER_SCRIPT", script(tmp_path, "t", f"until [ -e {go} ]; do sleep 0.02; done"))
    served.add_flows([flow])
    job = tmp_path / "jobs" / "ip" / "t.job1"

    def ended() -> bool:
        # A job reports complete just before its process ends: until then, it
        # may still read its file.
        return t.status is NodeStatus.complete and "/ip/t" not in served.jobs.watches

    await client.call("begin", path="/ip")
    await wait_for(served, ended)
    first = job.stat().st_ino
    await client.call("requeue", path="/ip/t")
    await wait_for(served, ended)
    assert job.stat().st_ino == first  # the same file, written again
    go.unlink()
    await client.call("requeue", path="/ip/t")
    await wait_for(served, lambda: t.status is NodeStatus.active)
    assert job.stat().st_ino == first
    running = job.read_text()
    old_password = t.password
    await client.call("requeue", path="/ip/t", force=True)
    await wait_for(served, lambda: t.status is NodeStatus.active and t.password != old_password)
    assert job.stat().st_ino != first  # replaced: the first job still reads the old one
    assert old_password is not None and old_password in running
    assert t.password is not None and t.password in job.read_text()
    go.touch()
    await wait_for(served, lambda: t.status is NodeStatus.complete)


async def test_a_job_command_the_local_runner_does_not_run_is_told_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, served: TaklerServer, client
) -> None:
    flow = base_flow(tmp_path, "jc")
    flow.add_parameter("TAKLER_SCRIPT", script(tmp_path, "jc", "true"))
    flow.add_parameter("TAKLER_JOB_CMD", "ssh elsewhere %ECF_JOB%")
    flow.add_task("t1")
    flow.add_task("t2")
    quiet = base_flow(tmp_path, "bg")  # ecFlow's default: what the local runner does
    quiet.add_parameter("TAKLER_SCRIPT", script(tmp_path, "bg", "true"))
    quiet.add_parameter("ECF_JOB_CMD", "%ECF_JOB% 1> %ECF_JOBOUT% 2>&1 &")
    quiet.add_task("t")
    served.add_flows([flow, quiet])
    await client.call("begin", path="/jc")
    await client.call("begin", path="/bg")
    await wait_for(served, lambda: (flow.state, quiet.state) == (NodeStatus.complete,) * 2)
    log = (tmp_path / "home" / "takler.log").read_text()
    assert log.count("not run: the local runner starts jobs itself") == 1
    assert "'ssh elsewhere %ECF_JOB%'" in log and "TAKLER_RUNNER" in log


async def test_abort_is_retried_until_tries_are_spent(
    tmp_path: Path, served: TaklerServer, client
) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "ab")
    flaky = flow.add_task("flaky")
    flaky.add_parameter(
        "TAKLER_SCRIPT", script(tmp_path, "flaky", 'if [ "{{ TAKLER_TRYNO }}" = 1 ]; then false; fi')
    )
    broken = flow.add_task("broken")
    broken.add_parameter("TAKLER_SCRIPT", script(tmp_path, "broken", "exit 3"))
    served.add_flows([flow])
    await client.call("begin", path="/ab")
    await wait_for(
        served,
        lambda: flaky.status is NodeStatus.complete and broken.status is NodeStatus.aborted,
    )
    assert flaky.tryno == 2
    assert broken.tryno == 2
    assert broken.reason
    why = await client.call("why", path="/ab/broken")
    assert any("aborted" in r for r in why["reasons"])
    assert (tmp_path / "jobs" / "ab" / "broken.job1").exists()
    assert (tmp_path / "jobs" / "ab" / "broken.job2").exists()


async def test_kill_aborts_a_running_job(tmp_path: Path, served: TaklerServer, client) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "k")
    flow.add_parameter("TAKLER_TRIES", 1)
    slow = flow.add_task("slow")
    slow.add_parameter("TAKLER_SCRIPT", script(tmp_path, "slow", "sleep 60"))
    served.add_flows([flow])
    await client.call("begin", path="/k")
    await wait_for(served, lambda: slow.status is NodeStatus.active)
    result = await client.call("kill", path="/k/slow")
    assert result == {"killed": ["/k/slow"]}
    await wait_for(served, lambda: slow.status is NodeStatus.aborted)
    assert slow.reason is not None


async def test_kill_waits_for_a_submission_in_progress(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # A batch system may answer with the job's id after the job has started
    # and reported init: a kill meanwhile waits for the id, then kills.
    answer = trio.Event()

    class SlowToAnswer(LocalRunner):
        async def submit(self, spec: JobSpec) -> JobHandle:
            handle = await super().submit(spec)
            await answer.wait()
            return handle

    server = TaklerServer(port=0, home=tmp_path / "home", console=False,
                          runners={"local": SlowToAnswer()})  # fmt: skip
    await server.start()
    nursery.start_soon(server.run)
    flow = base_flow(tmp_path, "ks")
    slow = flow.add_task("slow")
    slow.add_parameter("TAKLER_SCRIPT", script(tmp_path, "slow", "sleep 60"))
    slow.add_parameter("TAKLER_TRIES", 1)
    server.add_flows([flow])
    result: dict[str, object] = {}
    async with open_client("127.0.0.1", server.port, token=server.token) as client:
        await client.call("begin", path="/ks")
        await wait_for(server, lambda: slow.status is NodeStatus.active)

        async def kill() -> None:
            result["kill"] = await client.call("kill", path="/ks/slow")

        assert server.jobs is not None
        watch = server.jobs.watches["/ks/slow"]
        async with trio.open_nursery() as inner:
            inner.start_soon(kill)
            # Client and server share this run: once every task is blocked
            # (no socket ready), the kill has reached the server and waits.
            await trio.testing.wait_all_tasks_blocked()
            assert watch.submitted.statistics().tasks_waiting == 1
            assert "kill" not in result
            answer.set()
    assert result["kill"] == {"killed": ["/ks/slow"]}
    await wait_for(server, lambda: slow.status is NodeStatus.aborted)
    server.stop_now()


async def test_a_zombie_is_refused_and_listed(tmp_path: Path, served: TaklerServer, client) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "z")
    waiting = flow.add_task("waiting")
    waiting.add_parameter("TAKLER_SCRIPT", script(tmp_path, "waiting", "sleep 60"))
    # Killed at the end: a second try would outlive the server, retrying for a day.
    waiting.add_parameter("TAKLER_TRIES", 1)
    served.add_flows([flow])
    await client.call("begin", path="/z")
    await wait_for(served, lambda: waiting.status is NodeStatus.active)
    zombie = ChildClient("127.0.0.1", served.port, "/z/waiting", "not-the-password", 1, timeout=2)
    with pytest.raises(ChildCommandError) as info:
        await trio.to_thread.run_sync(zombie.complete)
    assert info.value.code == "zombie"
    assert waiting.status is NodeStatus.active
    stale = ChildClient("127.0.0.1", served.port, "/z/waiting", waiting.password or "", 7, timeout=2)
    with pytest.raises(ChildCommandError):
        await trio.to_thread.run_sync(stale.complete)
    zombies = await client.call("zombies")
    assert {z["path"] for z in zombies} == {"/z/waiting"}
    await client.call("kill", path="/z/waiting")


async def test_operator_commands(tmp_path: Path, served: TaklerServer, client) -> None:  # type: ignore[no-untyped-def]
    flow = base_flow(tmp_path, "op")
    fam = flow.add_family("f")
    fam.add_parameter("TAKLER_SCRIPT", script(tmp_path, "op", "true"))
    t1 = fam.add_task("t1")
    t2 = fam.add_task("t2")
    t2.add_trigger("t1 == complete")
    served.add_flows([flow])
    with pytest.raises(RemoteError) as info:
        await client.call("requeue", path="/op")
    assert "begin" in info.value.message
    await client.call("suspend", path="/op/f")
    await client.call("begin", path="/op")
    why = await client.call("why", path="/op/f/t1")
    assert any("suspended" in r for r in why["reasons"])
    await client.call("resume", path="/op/f")
    await wait_for(served, lambda: flow.state is NodeStatus.complete)
    await client.call("requeue", path="/op/f/t2")
    assert t2.status is NodeStatus.queued or t2.status in (
        NodeStatus.submitted, NodeStatus.active, NodeStatus.complete
    )  # fmt: skip
    await wait_for(served, lambda: t2.status is NodeStatus.complete)
    await client.call("force", path="/op/f/t1", state="aborted")
    assert t1.status is NodeStatus.aborted
    await client.call("run", path="/op/f/t1")
    await wait_for(served, lambda: t1.status is NodeStatus.complete)
    await client.call("alter", path="/op/f", action="add", kind="variable", name="X", value="1")
    assert fam.parameters["X"] == "1"
    with pytest.raises(RemoteError) as info:
        await client.call("alter", path="/op/f/t2", action="change", kind="trigger", value="t1 ==")
    assert info.value.code == "bad_expression"
    assert t2.trigger is not None and t2.trigger.text == "t1 == complete"
    with pytest.raises(RemoteError) as info:
        await client.call("show", path="/op/nothing")
    assert info.value.code == "not_found"
    await client.call("shutdown")
    ping = await client.call("ping")
    assert ping["server_state"] == "shutdown"
    await client.call("restart")
    await client.call("delete", path="/op")
    assert "op" not in served.bunch.flows


async def test_time_is_the_servers_clock(tmp_path: Path) -> None:
    server = TaklerServer(port=0, home=tmp_path / "h", console=False)
    before = dt.datetime.now()
    await server.start()
    try:
        assert abs((server.now() - before).total_seconds()) < 5
    finally:
        await server.aclose()


async def test_a_stopped_server_gives_logging_back(tmp_path: Path) -> None:
    logger = logging.getLogger("takler")
    before = (logger.propagate, logger.level, list(logger.handlers))
    server = TaklerServer(port=0, home=tmp_path / "home", console=False, log_level="DEBUG")
    await server.start()
    assert logger.propagate is False and logger.level == logging.DEBUG
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        await trio.testing.wait_all_tasks_blocked()
        server.stop_now()
    assert (logger.propagate, logger.level, list(logger.handlers)) == before
    assert "server stopped" in (tmp_path / "home" / "takler.log").read_text()


def test_tune_gc_frees_young_garbage_and_freezes_what_lives() -> None:
    # Process-wide, so in a process of its own.
    code = (
        "import gc, weakref\n"
        "from takler.server.server import GC_THRESHOLD, tune_gc\n"
        "class C: pass\n"
        "a = C(); a.me = a; gone = weakref.ref(a); del a\n"
        "tune_gc()\n"
        "assert gone() is None, 'young cyclic garbage was frozen'\n"
        "assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == GC_THRESHOLD\n"
        "print('tuned')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "tuned\n", done.stderr
