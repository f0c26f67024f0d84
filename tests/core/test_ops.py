"""Operations on the tree: begin, requeue, suspend, force, free, child commands, repeats."""

import datetime as dt

import pytest

from takler.core import Bunch, Change, ChangeKind, Flow, NodeStatus, Task, ops
from takler.core.errors import InvalidValueError, StateError, ZombieError
from takler.core.ready import complete_due, task_ready

NOW = dt.datetime(2024, 5, 1, 9, 0)
S = NodeStatus


def make(*names: str) -> tuple[Bunch, Flow, list[Task]]:
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    tasks = [flow.add_task(n) for n in names]
    bunch.drain()
    return bunch, flow, tasks


def run(task: Task, password: str = "pw") -> None:
    ops.start_submission(task, password)
    ops.init(task)


def status_changes(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.path, c.old, c.new) for c in changes if c.kind is ChangeKind.status]


# ---------------------------------------------------------------- begin


def test_nothing_is_ready_until_begin():
    bunch, flow, (t,) = make("t")
    assert not task_ready(t, NOW)
    changes = ops.begin(flow, NOW)
    assert changes[0] == Change("/s", ChangeKind.begun, None, False, True)
    assert status_changes(changes) == [("/s/t", "unknown", "queued"), ("/s", "unknown", "queued")]
    assert flow.begun and flow.begun_at == NOW
    assert task_ready(t, NOW)
    assert bunch.drain() == changes


def test_begin_twice_or_while_running_is_refused():
    _bunch, flow, (t,) = make("t")
    ops.begin(flow)
    with pytest.raises(StateError):
        ops.begin(flow)
    run(t)
    with pytest.raises(StateError):
        ops.begin(flow, force=True)
    ops.complete(t)
    ops.begin(flow, force=True)
    assert t.state is S.queued
    with pytest.raises(StateError):
        ops.begin(t)  # type: ignore[arg-type]


def test_requeue_needs_a_begun_flow():
    _, _flow, (t,) = make("t")
    with pytest.raises(StateError):
        ops.requeue(t)
    assert t.state is S.unknown


# ---------------------------------------------------------------- requeue


def test_requeue_resets_attributes_tries_and_latches():
    bunch, flow, (t,) = make("t")
    t.add_event("e")
    t.add_meter("m", 0, 9)
    t.add_label("l", "idle")
    t.add_time("10:00")
    t.add_trigger("1 == 0")
    ops.begin(flow)
    ops.free_dependencies(t, trigger=True, time=True)
    run(t)
    t.set_event("e")
    t.set_meter("m", 4)
    t.set_label("l", "busy")
    t.flags = {"late"}
    ops.complete(t)
    bunch.drain()
    changes = ops.requeue(t)
    assert Change("/s/t", ChangeKind.event, "e", True, False) in changes
    assert Change("/s/t", ChangeKind.meter, "m", 4, 0) in changes
    assert Change("/s/t", ChangeKind.label, "l", "busy", "idle") in changes
    assert Change("/s/t", ChangeKind.flag, "late", True, False) in changes
    assert Change("/s/t", ChangeKind.flag, "trigger_freed", True, False) in changes
    assert Change("/s/t", ChangeKind.tries, None, 1, 0) in changes
    assert (t.tryno, t.password, t.rid, t.submitted_at) == (0, None, None, None)
    assert t.trigger is not None and not t.trigger.freed
    assert not t.times[0].free and t.times[0].slot == dt.datetime(2024, 5, 1, 10, 0)
    assert t.flags == set()
    assert not task_ready(t, NOW)
    assert bunch.drain() == changes


def test_requeue_refuses_running_jobs_unless_forced():
    _, flow, (t, _u) = make("t", "u")
    ops.begin(flow)
    run(t)
    with pytest.raises(StateError, match="submitted or active"):
        ops.requeue(flow)
    assert t.state is S.active
    ops.requeue(flow, force=True)
    assert (t.state, flow.state) == (S.queued, S.queued)


def test_requeue_resets_repeats_only_when_asked():
    _, flow, _ = make()
    fam = flow.add_family("f")
    fam.add_repeat("integer N 0 5")
    inner = fam.add_family("g")
    inner.add_repeat("integer M 0 5")
    t = inner.add_task("t")
    ops.begin(flow)
    fam.repeat.index = inner.repeat.index = 2
    ops.requeue(fam)
    assert (fam.repeat.index, inner.repeat.index) == (2, 2)
    changes = ops.requeue(fam, reset_repeats=True)
    assert (fam.repeat.index, inner.repeat.index) == (0, 0)
    assert Change("/s/f", ChangeKind.repeat, "N", 2, 0) in changes
    assert t.state is S.queued


# ---------------------------------------------------------------- suspend, resume


def test_suspended_subtree_submits_nothing():
    _, flow, _ = make()
    fam = flow.add_family("f")
    t = fam.add_task("t")
    ops.begin(flow)
    assert ops.suspend(fam) == [
        Change("/s/f", ChangeKind.suspended, None, False, True),
        Change("/s/f", ChangeKind.status, None, "queued", "suspended"),
        Change("/s", ChangeKind.status, None, "queued", "suspended"),
    ]
    assert ops.suspend(fam) == []
    assert t.state is S.queued and t.is_suspended_in_tree()
    assert not task_ready(t, NOW)
    changes = ops.resume(fam)
    assert changes[0] == Change("/s/f", ChangeKind.suspended, None, True, False)
    assert ops.resume(fam) == []
    assert task_ready(t, NOW)


# ---------------------------------------------------------------- force


def test_force_task_states_and_errors():
    _bunch, flow, (t,) = make("t")
    ops.begin(flow)
    for state in ("submitted", "active", "aborted", "complete", "unknown"):
        ops.force(t, state)
        assert t.state is S(state) and flow.state is S(state)
    with pytest.raises(StateError):
        ops.force(t, "suspended")
    with pytest.raises(InvalidValueError):
        ops.force(t, "bogus")
    assert t.state is S.unknown


def test_force_family_applies_to_every_task_and_queued_requeues():
    _, flow, _ = make()
    fam = flow.add_family("f")
    a = fam.add_task("a")
    b = fam.add_family("g").add_task("b")
    a.add_event("e")
    ops.begin(flow)
    ops.force(fam, S.complete, recursive=True)
    assert (a.state, b.state, fam.state, flow.state) == (S.complete,) * 4
    run(a)
    a.set_event("e")
    ops.force(fam, "queued")
    assert (a.state, b.state, fam.state) == (S.queued,) * 3
    assert not a.events["e"].value and a.tryno == 0


def test_force_releases_limit_tokens():
    _, flow, (t,) = make("t")
    limit = flow.add_limit("L", 1)
    t.add_in_limit("L")
    ops.begin(flow)
    ops.start_submission(t, "pw")
    assert limit.holders == {"/s/t": 1}
    ops.force(t, "complete")
    assert limit.holders == {}


# ---------------------------------------------------------------- free dependencies


def test_free_trigger_and_time_until_requeue():
    _bunch, flow, (_t, u) = make("t", "u")
    u.add_trigger("t == complete")
    u.add_time("23:00")
    u.add_complete("t == aborted")
    ops.begin(flow)
    assert not task_ready(u, NOW)
    assert ops.free_dependencies(u) == [
        Change("/s/u", ChangeKind.flag, "trigger_freed", False, True)
    ]
    assert not task_ready(u, NOW)  # time still holds
    changes = ops.free_dependencies(u, trigger=False, time=True, complete=True)
    assert changes == [
        Change("/s/u", ChangeKind.flag, "complete_freed", False, True),
        Change("/s/u", ChangeKind.flag, "time_freed", False, True),
    ]
    assert task_ready(u, NOW)
    assert ops.free_dependencies(u, trigger=True) == []  # already freed
    ops.requeue(u)
    assert not task_ready(u, NOW)


def test_complete_expression_completes_a_queued_node():
    _, flow, (t, u) = make("t", "u")
    u.add_complete("t == complete")
    ops.begin(flow)
    assert not complete_due(u)
    ops.force(t, "complete")
    assert complete_due(u)
    changes = ops.set_complete_by_expression(u)
    assert ("/s/u", "queued", "complete") in status_changes(changes)
    assert not complete_due(u)


# ---------------------------------------------------------------- jobs and child commands


def test_run_eligibility():
    _, flow, (t,) = make("t")
    ops.begin(flow)
    ops.check_runnable(t)
    ops.start_submission(t, "pw")
    with pytest.raises(StateError):
        ops.check_runnable(t)
    ops.check_runnable(t, force=True)
    with pytest.raises(StateError):
        ops.check_runnable(flow)  # type: ignore[arg-type]


def test_submission_init_complete_cycle():
    bunch, flow, (t,) = make("t")
    ops.begin(flow)
    bunch.drain()
    at = NOW + dt.timedelta(minutes=1)
    changes = ops.start_submission(t, "secret", at)
    assert Change("/s/t", ChangeKind.tries, None, 0, 1) in changes
    assert (t.state, t.tryno, t.password, t.submitted_at) == (S.submitted, 1, "secret", at)
    assert ops.record_job(t, "1234", {"runner": "local"}) == [
        Change("/s/t", ChangeKind.submission, None, None, {"rid": "1234", "runner": "local"})
    ]
    assert (t.rid, t.job) == ("1234", {"runner": "local"})
    ops.check_child(t, "secret", 1)
    ops.init(t, at)
    assert (t.state, t.active_at) == (S.active, at)
    assert ops.init(t) == []  # a repeated init changes nothing
    ops.complete(t)
    assert t.state is S.complete and flow.state is S.complete
    with pytest.raises(StateError):
        ops.complete(t)
    with pytest.raises(StateError):
        ops.init(t)
    assert bunch.drain()[-1] == Change("/s", ChangeKind.status, None, "active", "complete")


def test_check_child_refuses_zombies():
    _, flow, (t,) = make("t")
    ops.begin(flow)
    with pytest.raises(ZombieError):
        ops.check_child(t, None, 0)  # never submitted
    ops.start_submission(t, "one")
    ops.start_submission(t, "two")  # a rerun: the first job is now a zombie
    with pytest.raises(ZombieError, match="password"):
        ops.check_child(t, "one", 1)
    with pytest.raises(ZombieError, match="try 1"):
        ops.check_child(t, "two", 1)
    ops.check_child(t, "two", 2)
    ops.force(t, "complete")
    with pytest.raises(ZombieError, match="not running"):
        ops.check_child(t, "two", 2)
    with pytest.raises(ZombieError):
        ops.check_child(flow, "two", 2)  # type: ignore[arg-type]


def test_abort_retries_until_tries_are_spent():
    _, flow, (t,) = make("t")
    ops.begin(flow)
    assert ops.tries_allowed(t) == 2
    run(t)
    changes = ops.abort(t, "exit 1")
    assert status_changes(changes)[:2] == [
        ("/s/t", "active", "aborted"),
        ("/s", "active", "aborted"),
    ]
    assert (t.state, t.reason, t.password) == (S.queued, "exit 1", None)
    assert task_ready(t, NOW)
    run(t, "again")
    ops.abort(t, "exit 2")
    assert (t.state, t.tryno, t.reason, flow.state) == (S.aborted, 2, "exit 2", S.aborted)
    assert not task_ready(t, NOW)


@pytest.mark.parametrize(("name", "value", "tries"), [
    ("TAKLER_TRIES", 3, 3), ("TAKLER_TRIES", "1", 1), ("ECF_TRIES", 4, 4),
    ("TAKLER_TRIES", "x", 2), ("TAKLER_TRIES", 0, 1),
])  # fmt: skip
def test_tries_come_from_parameters(name, value, tries):
    _, flow, (t,) = make("t")
    flow.add_parameter(name, value)
    assert ops.tries_allowed(t) == tries


def test_delete_refuses_running_jobs_unless_forced():
    bunch, flow, (t, u) = make("t", "u")
    ops.begin(flow)
    run(t)
    with pytest.raises(StateError):
        ops.delete(t)
    assert bunch.get_node("/s/t") is t
    assert ops.delete(u)[0] == Change("/s/u", ChangeKind.node_deleted, None, "task", None)
    ops.delete(t, force=True)
    assert flow.children == [] and flow.state is S.unknown
    ops.delete(flow)
    assert bunch.flows == {}


def test_late_flag_is_raised_once_and_cleared_by_requeue():
    _, flow, (t,) = make("t")
    flow.add_late("-s +00:10")
    ops.begin(flow)
    ops.start_submission(t, "pw", NOW)
    assert ops.late_deadline(t, NOW) == NOW + dt.timedelta(minutes=10)
    assert ops.check_late(t, NOW + dt.timedelta(minutes=9)) == []
    assert ops.check_late(t, NOW + dt.timedelta(minutes=10)) == [
        Change("/s/t", ChangeKind.flag, "late", False, True)
    ]
    assert ops.check_late(t, NOW + dt.timedelta(minutes=20)) == []
    assert ops.late_deadline(t, NOW) is None
    ops.requeue(t, force=True)
    assert t.flags == set()


# ---------------------------------------------------------------- repeats and time series


def test_repeat_advances_and_requeues_its_subtree_until_the_end():
    bunch, flow, _ = make()
    fam = flow.add_family("f")
    fam.add_repeat("integer N 1 3")
    t = fam.add_task("t")
    t.add_event("e")
    watcher = flow.add_task("w")
    watcher.add_trigger("f:N == 3")
    ops.begin(flow)
    run(t)
    t.set_event("e")
    changes = ops.complete(t)
    assert Change("/s/f", ChangeKind.repeat, "N", 0, 1) in changes
    assert (fam.repeat.value, t.state, t.events["e"].value, t.tryno) == (2, S.queued, False, 0)
    assert fam.state is S.queued
    repeat_change = next(c for c in changes if c.kind is ChangeKind.repeat)
    assert bunch.dependents(repeat_change) == {watcher}
    assert not task_ready(watcher, NOW)
    run(t)
    ops.complete(t)
    assert task_ready(watcher, NOW)
    run(t)
    ops.complete(t)  # past the end: stays complete
    assert (fam.repeat.value, fam.repeat.expired) == (3, True)
    assert (t.state, fam.state) == (S.complete, S.complete)
    assert t.find_parameter("N") == "3"


def test_nested_repeats_inner_first():
    _, flow, _ = make()
    outer = flow.add_family("o")
    outer.add_repeat("integer I 0 1")
    inner = outer.add_family("i")
    inner.add_repeat("integer J 0 1")
    t = inner.add_task("t")
    ops.begin(flow)
    seen = []
    for _ in range(4):
        seen.append((outer.repeat.value, inner.repeat.value))
        run(t)
        ops.complete(t)
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert outer.state is S.complete and flow.state is S.complete


def test_force_complete_advances_a_task_repeat():
    _, flow, (t,) = make("t")
    t.add_repeat("integer N 0 2")
    ops.begin(flow)
    ops.force(t, "complete")
    assert (t.repeat.value, t.state) == (1, S.queued)


def test_time_series_requeues_for_the_next_slot():
    _, flow, (t,) = make("t")
    t.add_time("10:00 12:00 01:00")
    ops.begin(flow, NOW)
    assert not task_ready(t, NOW)
    ten = NOW.replace(hour=10)
    assert task_ready(t, ten)
    ops.start_submission(t, "pw", ten)
    ops.init(t, ten)
    ops.complete(t, ten.replace(minute=5))
    assert t.state is S.queued
    assert not task_ready(t, ten.replace(minute=30))
    assert task_ready(t, ten.replace(hour=11))
    ops.force(t, "complete", ten.replace(hour=12, minute=30))  # after the last slot
    assert t.state is S.complete


def test_a_repeat_in_a_flow_not_begun_does_not_advance():
    _, _flow, (t,) = make("t")
    t.add_repeat("integer N 0 2")
    ops.force(t, "complete")
    assert (t.repeat.index, t.state) == (0, S.complete)


def test_a_repeat_that_completes_while_suspended_advances_on_resume():
    _, flow, (t,) = make("t")
    t.add_repeat("integer N 0 2")
    ops.begin(flow)
    run(t)
    ops.suspend(t)
    ops.complete(t)  # the job ends while the task is suspended
    assert (t.state, t.status, t.repeat.index) == (S.suspended, S.complete, 0)
    changes = ops.resume(t)
    assert Change("/s/t", ChangeKind.repeat, "N", 0, 1) in changes
    assert (t.state, t.repeat.index) == (S.queued, 1)
