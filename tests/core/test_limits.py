"""Limits and inlimits: finding the limit, tokens, -n and -s, release, triggers on limits."""

import datetime as dt

import pytest

from takler.core import Bunch, Change, ChangeKind, Flow, Task, ops
from takler.core.errors import AttributeNotFoundError, InvalidValueError
from takler.core.limits import blocking_limits, find_limit_owner, missing_limits
from takler.core.ready import task_ready

NOW = dt.datetime(2024, 5, 1, 9, 0)


def begun(flow: Flow) -> Bunch:
    bunch = Bunch(now=NOW)
    bunch.add_flow(flow)
    ops.begin(flow)
    bunch.drain()
    return bunch


def submit(task: Task) -> list[Change]:
    """What the scheduler does: submit only when every limit has room."""
    assert not blocking_limits(task), f"{task.node_path} is blocked"
    return ops.start_submission(task, "pw")


def test_limit_is_found_up_the_tree_nearest_first():
    flow = Flow("s")
    flow.add_limit("L", 5)
    fam = flow.add_family("f")
    near = fam.add_limit("L", 1)
    t = fam.add_task("t")
    u = flow.add_task("u")
    t.add_in_limit("L")
    u.add_in_limit("L")
    begun(flow)
    assert find_limit_owner(t, t.inlimits[0]) is fam
    assert find_limit_owner(u, u.inlimits[0]) is flow
    submit(t)
    assert near.holders == {"/s/f/t": 1} and flow.limits["L"].holders == {}


def test_limit_by_path_absolute_and_relative():
    flow = Flow("s")
    g = flow.add_family("g")
    limit = g.add_limit("L", 1)
    fam = flow.add_family("f")
    a = fam.add_task("a")
    a.add_in_limit("/s/g:L")
    b = fam.add_task("b")
    b.add_in_limit("../g:L")
    assert a.inlimits[0].spec == "/s/g:L" and b.inlimits[0].path == "../g"
    begun(flow)
    assert find_limit_owner(b, b.inlimits[0]) is g
    changes = submit(a)
    assert Change("/s/g", ChangeKind.limit, "L", 0, 1) in changes
    assert [(o.node_path, lim.name) for o, lim, _ in blocking_limits(b)] == [("/s/g", "L")]
    assert limit.value == 1


def test_tokens_count_against_the_maximum():
    flow = Flow("s")
    limit = flow.add_limit("L", 3)
    big = flow.add_task("big")
    big.add_in_limit("L", tokens=2)
    small = flow.add_task("small")
    small.add_in_limit("L")
    other = flow.add_task("other")
    other.add_in_limit("L", tokens=2)
    begun(flow)
    submit(big)
    submit(small)
    assert limit.value == 3 and limit.holders == {"/s/big": 2, "/s/small": 1}
    assert blocking_limits(other)
    ops.init(small)
    ops.complete(small)
    assert limit.value == 2 and blocking_limits(other)
    ops.abort(big, "x")
    assert limit.value == 0 and not blocking_limits(other)


def test_family_inlimit_counts_each_task_by_default():
    flow = Flow("s")
    limit = flow.add_limit("L", 2)
    fam = flow.add_family("f")
    fam.add_in_limit("L")
    a, b, c = (fam.add_task(n) for n in "abc")
    begun(flow)
    submit(a)
    submit(b)
    assert limit.holders == {"/s/f/a": 1, "/s/f/b": 1}
    assert blocking_limits(c)


def test_family_inlimit_node_only_counts_the_family_once():
    flow = Flow("s")
    limit = flow.add_limit("L", 1)
    fam = flow.add_family("f")
    fam.add_in_limit("L", node_only=True)
    a, b = fam.add_task("a"), fam.add_task("b")
    other = flow.add_family("g")
    other.add_in_limit("L", node_only=True)
    x = other.add_task("x")
    begun(flow)
    submit(a)
    submit(b)  # same holder: room
    assert limit.holders == {"/s/f": 1}
    assert blocking_limits(x)
    ops.force(a, "complete")
    assert limit.holders == {"/s/f": 1}  # b still runs
    ops.init(b)
    ops.complete(b)
    assert limit.holders == {}
    assert not blocking_limits(x)


def test_submission_only_inlimit_releases_when_active():
    flow = Flow("s")
    limit = flow.add_limit("L", 1)
    a, b = flow.add_task("a"), flow.add_task("b")
    for t in (a, b):
        t.add_in_limit("L", submission_only=True)
    begun(flow)
    submit(a)
    assert limit.holders == {"/s/a": 1} and blocking_limits(b)
    changes = ops.init(a)
    assert Change("/s", ChangeKind.limit, "L", 1, 0) in changes
    assert limit.holders == {} and not blocking_limits(b)
    ops.complete(a)
    assert limit.holders == {}


@pytest.mark.parametrize("how", ["requeue", "force_queued", "delete"])
def test_tokens_go_back_when_the_job_is_dropped(how):
    flow = Flow("s")
    limit = flow.add_limit("L", 1)
    t = flow.add_task("t")
    t.add_in_limit("L")
    begun(flow)
    submit(t)
    if how == "requeue":
        ops.requeue(t, force=True)
    elif how == "force_queued":
        ops.force(t, "queued")
    else:
        ops.delete(t, force=True)
    assert limit.holders == {}


def test_deleting_a_running_task_of_a_node_only_family_frees_the_family_token():
    flow = Flow("s")
    limit = flow.add_limit("L", 1)
    fam = flow.add_family("f")
    fam.add_in_limit("L", node_only=True)
    t = fam.add_task("t")
    begun(flow)
    submit(t)
    ops.delete(t, force=True)
    assert limit.holders == {}
    g = flow.add_family("g")
    g.add_in_limit("L", node_only=True)
    u = g.add_task("u")
    ops.requeue(g)
    submit(u)
    ops.delete(g, force=True)
    assert limit.holders == {}


def test_missing_limit_is_reported_and_submission_refused_without_change():
    flow = Flow("s")
    t = flow.add_task("t")
    t.add_in_limit("NOPE")
    bunch = begun(flow)
    assert missing_limits(t) == ["/s/t: inlimit NOPE names no limit"]
    with pytest.raises(AttributeNotFoundError):
        ops.start_submission(t, "pw")
    assert t.tryno == 0 and bunch.drain() == []


def test_limit_value_in_triggers_and_dependents():
    flow = Flow("s")
    flow.add_limit("L", 2)
    busy = flow.add_task("busy")
    busy.add_in_limit("L")
    idle = flow.add_task("idle")
    idle.add_trigger("/s:L == 0")
    waiter = flow.add_task("waiter")
    waiter.add_in_limit("L")
    bunch = begun(flow)
    assert task_ready(idle, NOW)
    changes = submit(busy)
    change = next(c for c in changes if c.kind is ChangeKind.limit)
    # Tasks held by a full limit wait in its queue, not in the index.
    assert bunch.dependents(change) == {idle}
    assert bunch.limit_users("/s", "L") == {busy, waiter}
    assert not task_ready(idle, NOW)


def test_set_limit_max_and_bad_limits():
    flow = Flow("s")
    flow.add_limit("L", 1)
    begun(flow)
    assert flow.set_limit_max("L", 4) == [Change("/s", ChangeKind.limit, "L", 1, 4)]
    for bad in (-1, True, "3"):
        with pytest.raises(InvalidValueError):
            flow.set_limit_max("L", bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError):
            flow.add_limit("M", bad)  # type: ignore[arg-type]
    with pytest.raises(AttributeNotFoundError):
        flow.set_limit_max("M", 1)
    assert flow.limits["L"].maximum == 4 and "M" not in flow.limits


def test_limit_added_after_its_inlimit_is_indexed():
    flow = Flow("s")
    fam = flow.add_family("f")
    t = fam.add_task("t")
    t.add_in_limit("L")
    bunch = begun(flow)
    assert missing_limits(t)
    fam.add_limit("L", 1)
    assert bunch.limit_users("/s/f", "L") == {t}
    assert not missing_limits(t)
