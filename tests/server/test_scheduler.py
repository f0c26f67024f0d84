"""The scheduler alone: candidates from changes, limits, time deadlines (MockClock)."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from takler.core import Bunch, Flow, NodeStatus, Task, ops
from takler.server.scheduler import Scheduler

T0 = dt.datetime(2024, 3, 1, 9, 0)


class Harness:
    """A scheduler wired to a bunch, with a fake job start that records tasks."""

    def __init__(self, bunch: Bunch) -> None:
        self.bunch = bunch
        self.started: list[str] = []
        self.running = True
        self.commits = 0
        self.trio0 = trio.current_time()
        self.scheduler = Scheduler(
            bunch, self.now, self.started_job, self.commit, lambda: self.running, lambda: "pw"
        )

    def now(self) -> dt.datetime:
        return T0 + dt.timedelta(seconds=trio.current_time() - self.trio0)

    def started_job(self, task: Task) -> None:
        self.started.append(task.node_path)

    async def commit(self) -> None:
        self.commits += 1
        self.bunch.now = self.now()
        changes = self.bunch.drain()
        if changes:
            self.scheduler.notice(changes)

    async def apply(self, fn, *args, **kw):  # type: ignore[no-untyped-def]
        self.bunch.now = self.now()
        fn(*args, **kw)
        await self.commit()
        await trio.testing.wait_all_tasks_blocked()


def chain_flow(n: int = 5) -> Flow:
    flow = Flow("chain")
    fam = flow.add_family("f")
    for i in range(n):
        t = fam.add_task(f"t{i}")
        if i:
            t.add_trigger(f"t{i - 1} == complete")
    return flow


@pytest.fixture
async def harness(nursery: trio.Nursery) -> Harness:
    h = Harness(Bunch())
    await nursery.start(h.scheduler.run)
    return h


async def run_task(h: Harness, path: str) -> None:
    task = h.bunch.find_node(path)
    assert isinstance(task, Task)
    await h.apply(ops.init, task)
    await h.apply(ops.complete, task)


async def test_nothing_runs_before_begin(harness: Harness) -> None:
    harness.bunch.add_flow(chain_flow())
    await harness.commit()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.started == []


async def test_chain_advances_on_each_completion(harness: Harness) -> None:
    flow = harness.bunch.add_flow(chain_flow(5))
    await harness.apply(ops.begin, flow)
    assert harness.started == ["/chain/f/t0"]
    for i in range(5):
        await run_task(harness, f"/chain/f/t{i}")
        expected = [f"/chain/f/t{j}" for j in range(min(i + 2, 5))]
        assert harness.started == expected
    assert flow.state is NodeStatus.complete


async def test_one_change_considers_only_dependents(harness: Harness) -> None:
    flow = Flow("wide")
    fam = flow.add_family("f")
    first = fam.add_task("first")
    for i in range(200):
        fam.add_task(f"t{i}").add_trigger(
            "first == complete" if i == 0 else f"t{i - 1} == complete"
        )
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    before = harness.scheduler.considered
    await run_task(harness, first.node_path)
    # t0 depends on first; the family's state change may add a handful more.
    assert harness.scheduler.considered - before <= 3
    assert harness.started[-1] == "/wide/f/t0"


async def test_limit_holds_jobs_and_releases_in_order(harness: Harness) -> None:
    flow = Flow("lim")
    flow.add_limit("L", 2)
    fam = flow.add_family("f")
    fam.add_in_limit("L")
    for i in range(6):
        fam.add_task(f"t{i}")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    assert harness.started == ["/lim/f/t0", "/lim/f/t1"]
    assert flow.limits["L"].value == 2
    await run_task(harness, "/lim/f/t0")
    assert harness.started[-1] == "/lim/f/t2"
    assert len(harness.started) == 3
    await run_task(harness, "/lim/f/t1")
    await run_task(harness, "/lim/f/t2")
    assert harness.started == [f"/lim/f/t{i}" for i in range(5)]
    assert flow.limits["L"].value == 2


async def test_suspended_family_submits_nothing_until_resumed(harness: Harness) -> None:
    flow = Flow("s")
    fam = flow.add_family("f")
    fam.add_task("t")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.suspend, fam)
    await harness.apply(ops.begin, flow)
    assert harness.started == []
    await harness.apply(ops.resume, fam)
    assert harness.started == ["/s/f/t"]


async def test_event_and_meter_release_triggers(harness: Harness) -> None:
    flow = Flow("em")
    fam = flow.add_family("f")
    producer = fam.add_task("p")
    producer.add_event("ready")
    producer.add_meter("step", 0, 10)
    fam.add_task("on_event").add_trigger("p:ready")
    fam.add_task("on_meter").add_trigger("p:step >= 5")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    assert harness.started == ["/em/f/p"]
    await harness.apply(ops.init, producer)
    await harness.apply(producer.set_event, "ready")
    assert harness.started[-1] == "/em/f/on_event"
    await harness.apply(producer.set_meter, "step", 4)
    assert "/em/f/on_meter" not in harness.started
    await harness.apply(producer.set_meter, "step", 5)
    assert harness.started[-1] == "/em/f/on_meter"


async def test_time_attribute_wakes_the_scheduler_at_its_deadline(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    flow = Flow("tm")
    flow.add_task("at930").add_time("09:30")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    assert harness.started == []
    await trio.sleep(29 * 60)
    assert harness.started == []
    await trio.sleep(61)
    assert harness.started == ["/tm/at930"]


async def test_shutdown_submits_nothing_and_restart_rescans(harness: Harness) -> None:
    harness.running = False
    flow = harness.bunch.add_flow(chain_flow(2))
    await harness.apply(ops.begin, flow)
    assert harness.started == []
    harness.running = True
    harness.scheduler.rescan()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.started == ["/chain/f/t0"]


def skip_flow(name: str) -> tuple[Flow, Task, Task]:
    """Task b runs after a, unless a sets its event skip (b's complete expression)."""
    flow = Flow(name)
    fam = flow.add_family("f")
    a = fam.add_task("a")
    a.add_event("skip")
    b = fam.add_task("b")
    b.add_trigger("a == complete")
    b.add_complete("a:skip")
    return flow, a, b


async def test_complete_expression_completes_without_running(harness: Harness) -> None:
    flow, a, b = skip_flow("ce")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    await harness.apply(ops.init, a)
    await harness.apply(a.set_event, "skip")
    assert b.status is NodeStatus.complete
    assert "/ce/f/b" not in harness.started


async def test_a_freed_complete_expression_completes_the_node(harness: Harness) -> None:
    # As in ecFlow: free-dep --all frees the complete expression too, which
    # then holds; the trigger freed with it does not start the task first.
    flow, a, b = skip_flow("fc")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    await harness.apply(ops.init, a)
    await harness.apply(ops.free_dependencies, b, trigger=True, complete=True)
    assert b.status is NodeStatus.complete
    assert "/fc/f/b" not in harness.started
    await harness.apply(ops.requeue, b)  # requeue clears the latch
    assert b.status is NodeStatus.queued
    assert b.complete_expr is not None and not b.complete_expr.freed


async def test_abort_with_tries_left_is_resubmitted(harness: Harness) -> None:
    flow = Flow("ab")
    task = flow.add_task("t")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    assert harness.started == ["/ab/t"]
    await harness.apply(ops.abort, task, "exit 1")
    assert harness.started == ["/ab/t", "/ab/t"]
    assert task.tryno == 2
    await harness.apply(ops.abort, task, "exit 1 again")
    assert task.status is NodeStatus.aborted
    assert len(harness.started) == 2


async def test_a_released_token_looks_at_the_queue_head_only(harness: Harness) -> None:
    flow = Flow("big")
    flow.add_limit("L", 2)
    fam = flow.add_family("f")
    fam.add_in_limit("L")
    for i in range(300):
        fam.add_task(f"t{i}")
    harness.bunch.add_flow(flow)
    await harness.apply(ops.begin, flow)
    assert len(harness.started) == 2
    before = harness.scheduler.considered
    await run_task(harness, "/big/f/t0")
    assert harness.started[-1] == "/big/f/t2"
    # The cost of a release does not grow with the 298 tasks still waiting.
    assert harness.scheduler.considered - before <= 3
