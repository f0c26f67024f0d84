"""why: every reason a node is held back, in words an operator can act on."""

import datetime as dt

from takler.core import Bunch, Flow, Task, ops
from takler.core.why import why

NOW = dt.datetime(2024, 5, 1, 9, 0)


def make() -> tuple[Bunch, Flow]:
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    return bunch, flow


def test_flow_not_begun():
    _, flow = make()
    t = flow.add_task("t")
    reasons = why(t, NOW)
    assert reasons == ["flow s has not begun: use 'begin s'"]


def test_nothing_holds_a_ready_task():
    _, flow = make()
    t = flow.add_task("t")
    ops.begin(flow)
    assert why(t, NOW) == []
    assert why(t, NOW, server_state="halted") == [
        "the server is halted: nothing is submitted until 'restart'"
    ]


def test_suspended_ancestor():
    _, flow = make()
    fam = flow.add_family("f")
    t = fam.add_task("t")
    ops.begin(flow)
    ops.suspend(fam)
    assert why(t, NOW) == ["/s/f is suspended: resume it"]


def test_trigger_names_the_current_values():
    _, flow = make()
    a = flow.add_task("a")
    a.add_meter("m", 0, 10)
    t = flow.add_task("t")
    t.add_trigger("a == complete and a:m >= 5")
    ops.begin(flow)
    a.set_meter("m", 3)
    assert why(t, NOW) == [
        '/s/t trigger: "a == complete" is false: a is queued',
        '/s/t trigger: "a:m >= 5" is false: a:m is 3',
    ]
    ops.force(a, "complete")
    a.set_meter("m", 7)
    assert why(t, NOW) == []


def test_trigger_on_a_missing_node():
    _, flow = make()
    t = flow.add_task("t")
    t.add_trigger("gone == complete")
    ops.begin(flow)
    (reason,) = why(t, NOW)
    assert reason.startswith("/s/t trigger: gone:") and "/s/gone" in reason


def test_time_not_reached_names_the_next_slot():
    _, flow = make()
    t = flow.add_task("t")
    t.add_time("10:00")
    t.add_day("friday")
    ops.begin(flow)
    assert why(t, NOW) == ["/s/t waits for time: time 10:00, day friday (next at 2024-05-01 10:00)"]


def test_full_limit_names_its_holders():
    _, flow = make()
    flow.add_limit("L", 1)
    a, b = flow.add_task("a"), flow.add_task("b")
    for t in (a, b):
        t.add_in_limit("L")
    ops.begin(flow)
    ops.start_submission(a, "pw")
    assert why(b, NOW) == ["limit /s:L is full (1/1, needs 1): held by /s/a"]
    assert why(a, NOW) == ["/s/a is submitted, not queued"]


def test_missing_limit():
    _, flow = make()
    t = flow.add_task("t")
    t.add_in_limit("NOPE")
    ops.begin(flow)
    assert why(t, NOW) == ["/s/t: inlimit NOPE names no limit"]


def test_aborted_with_tries_spent():
    _, flow = make()
    t = flow.add_task("t")
    ops.begin(flow)
    for password in ("one", "two"):
        ops.start_submission(t, password)
        ops.abort(t, "exit 1")
    assert why(t, NOW) == ["/s/t is aborted (exit 1) after try 2 of 2: requeue or run it"]


def test_family_gathers_its_tasks_reasons():
    _, flow = make()
    fam = flow.add_family("f")
    x = fam.add_task("x")
    y = fam.add_task("y")
    y.add_trigger("x == complete")
    ops.begin(flow)
    ops.start_submission(x, "pw")
    assert why(fam, NOW) == ['/s/f/y trigger: "x == complete" is false: x is submitted']
    ops.init(x)
    ops.complete(x)
    ops.start_submission(y, "pw")
    assert why(fam, NOW) == ["/s/f is submitted: no queued task under it"]


def test_many_queued_tasks_are_summarised():
    _, flow = make()
    fam = flow.add_family("f")
    fam.add_time("23:00")
    for i in range(25):
        fam.add_task(Task(f"t{i}"))
    ops.begin(flow)
    reasons = why(fam, NOW)
    assert len(reasons) == 21
    assert reasons[-1] == "... and 5 more queued tasks"


def test_task_added_after_begin_is_unknown_until_requeued():
    _, flow = make()
    ops.begin(flow)
    t = flow.add_task("late")
    assert why(t, NOW) == ["/s/late is unknown (added after begin): requeue it"]
    ops.requeue(t)
    assert why(t, NOW) == []
