"""The tree and its attributes: building, finding, states, errors, changes."""

import datetime as dt
from pathlib import Path

import pytest

import takler.core
from takler.core import (
    Bunch,
    Change,
    ChangeKind,
    Family,
    Flow,
    NodeContainer,
    NodeStatus,
    TaklerError,
    Task,
    ops,
)
from takler.core.errors import (
    AttributeNotFoundError,
    DuplicateNameError,
    ExpressionSyntaxError,
    InvalidNameError,
    InvalidValueError,
    NodeNotFoundError,
    RepeatError,
    StateError,
    TimeSpecError,
)
from takler.core.status import derive_from_counts, derive_status

NOW = dt.datetime(2024, 5, 1, 9, 0)
S = NodeStatus


def attached(flow: Flow) -> Bunch:
    bunch = Bunch(now=NOW)
    bunch.add_flow(flow)
    bunch.drain()
    return bunch


# ---------------------------------------------------------------- the seed's API


def test_seed_api_builds_and_finds_the_tree():
    flow = Flow("test")
    assert flow.add_parameter("TAKLER_HOME", Path("/home/u/t")) == "/home/u/t"
    task = Task("t1")
    assert flow.add_task(task) is task
    assert task.add_parameter("TAKLER_SCRIPT", Path("/home/u/t", "test/task1.takler")) == (
        "/home/u/t/test/task1.takler"
    )
    assert task.node_path == "/test/t1"
    assert task.parent is flow and task.flow is flow
    bunch = Bunch()
    assert bunch.add_flow(flow) is flow
    assert bunch.find_node("/test/t1") is task
    assert bunch.find_node("/test") is flow
    assert flow.find_node("t1") is task
    assert flow.state is S.unknown and task.state is S.unknown


@pytest.mark.parametrize(
    ("value", "stored"),
    [("x", "x"), (3, 3), (2.5, 2.5), (True, True), (Path("/a/b"), "/a/b")],
)
def test_parameter_values_of_each_kind(value, stored):
    flow = Flow("f")
    flow.add_parameter("P", value)
    assert flow.parameters["P"] == stored
    assert type(flow.parameters["P"]) is type(stored)


def test_parameter_of_another_type_is_refused():
    flow = Flow("f")
    with pytest.raises(InvalidValueError):
        flow.add_parameter("P", [1, 2])
    with pytest.raises(InvalidValueError):
        flow.add_parameter("P", None)
    assert flow.parameters == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1 << 63, -(1 << 64)])
def test_parameter_that_json_cannot_hold_is_refused(value):
    flow = Flow("f")
    with pytest.raises(InvalidValueError, match="parameter P"):
        flow.add_parameter("P", value)
    with pytest.raises(InvalidValueError, match="parameter P"):
        flow.set_parameter("P", value)
    assert flow.parameters == {}


def test_duplicate_parameter_is_refused():
    flow = Flow("f")
    flow.add_parameter("P", 1)
    with pytest.raises(DuplicateNameError):
        flow.add_parameter("P", 2)
    assert flow.parameters["P"] == 1


def test_family_is_node_container_and_both_add_methods_agree():
    assert NodeContainer is Family
    assert takler.core.NodeContainer is Family
    flow = Flow("f")
    a = flow.add_family("a")
    b = flow.add_container(NodeContainer("b"))
    assert isinstance(a, Family) and isinstance(b, Family)
    assert [c.name for c in flow.children] == ["a", "b"]
    assert a.add_task("t").node_path == "/f/a/t"


def test_find_node_relative_absolute_and_missing():
    flow = Flow("s")
    fam = flow.add_family("f")
    t1 = fam.add_task("t1")
    g = flow.add_family("g")
    assert fam.find_node("t1") is t1
    assert fam.find_node("./t1") is t1
    assert t1.parent is fam
    assert g.find_node("../f/t1") is t1
    assert g.find_node("/s/f/t1") is t1  # absolute without a bunch
    bunch = attached(flow)
    assert g.find_node("/s/f/t1") is t1
    assert bunch.find_node("s/f/t1") is t1  # slashes are normalised
    for bad in ("/s/f/t9", "/s/x", "/other/f"):
        with pytest.raises(NodeNotFoundError) as info:
            bunch.find_node(bad)
        assert isinstance(info.value, TaklerError) and isinstance(info.value, LookupError)
    with pytest.raises(NodeNotFoundError):
        fam.find_node("t1/x")  # t1 is a task
    with pytest.raises(NodeNotFoundError):
        flow.find_node("..")
    with pytest.raises(NodeNotFoundError):
        fam.child("nope")


@pytest.mark.parametrize("name", ["", "a b", "-x", ".", "..", "a/b", "é", "x" * 300])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidNameError):
        Task(name)
    flow = Flow("f")
    with pytest.raises(InvalidNameError):
        flow.add_family(name)
    with pytest.raises(InvalidNameError):
        flow.add_meter(name, 0, 1)
    assert flow.children == [] and flow.events == {}


def test_duplicate_child_and_reparenting_are_refused_without_change():
    flow = Flow("f")
    t1 = flow.add_task("t1")
    with pytest.raises(DuplicateNameError):
        flow.add_task(Task("t1"))
    with pytest.raises(DuplicateNameError):
        flow.add_family("t1")
    other = Flow("g")
    with pytest.raises(InvalidValueError):
        other.add_task(t1)  # t1 already has a parent
    with pytest.raises(InvalidValueError):
        other.add_family(Flow("h"))  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        other.add_task(Family("x"))  # type: ignore[arg-type]
    assert flow.children == [t1] and other.children == []
    assert t1.parent is flow


def test_bunch_refuses_duplicates_and_non_flows():
    bunch = Bunch()
    bunch.add_flow(Flow("f"))
    with pytest.raises(DuplicateNameError):
        bunch.add_flow(Flow("f"))
    with pytest.raises(InvalidValueError):
        bunch.add_flow(Family("x"))  # type: ignore[arg-type]
    flow = Flow("g")
    Bunch().add_flow(flow)
    with pytest.raises(InvalidValueError):
        bunch.add_flow(flow)  # already in another bunch
    assert list(bunch.flows) == ["f"]


def test_detached_nodes_have_no_flow():
    task = Task("t")
    with pytest.raises(StateError):
        task.flow  # noqa: B018
    with pytest.raises(StateError):
        ops.requeue(task)
    assert task.bunch is None


def test_walk_and_tasks_are_parents_first_in_order():
    flow = Flow("s")
    f = flow.add_family("f")
    f.add_task("a")
    f.add_family("g").add_task("b")
    flow.add_task("c")
    assert [n.node_path for n in flow.walk()] == [
        "/s", "/s/f", "/s/f/a", "/s/f/g", "/s/f/g/b", "/s/c",
    ]  # fmt: skip
    assert [t.name for t in flow.tasks()] == ["a", "b", "c"]
    assert list(f.find_node("a").ancestors()) == [f, flow]


def test_repr_names_path_and_state():
    flow = Flow("s")
    assert repr(flow.add_task("t")) == "<Task /s/t unknown>"


# ---------------------------------------------------------------- states


def test_derive_status_most_significant_wins():
    order = [S.complete, S.queued, S.submitted, S.active, S.suspended, S.aborted]
    for i, low in enumerate(order):
        for high in order[i:]:
            assert derive_status([low, high, S.unknown]) is high
            assert derive_status([high, low]) is high
    assert derive_status([]) is S.unknown
    assert derive_status([S.unknown, S.unknown]) is S.unknown
    assert derive_from_counts({S.active: 1, S.aborted: 0, S.queued: 3}) is S.active


def test_family_state_follows_children_through_operations():
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    fam = flow.add_family("f")
    t1, t2 = fam.add_task("t1"), fam.add_task("t2")
    assert (flow.state, fam.state) == (S.unknown, S.unknown)
    ops.begin(flow)
    assert (flow.state, fam.state, t1.state) == (S.queued,) * 3
    ops.start_submission(t1, "pw")
    assert (flow.state, fam.state) == (S.submitted, S.submitted)
    ops.init(t1)
    assert (flow.state, fam.state) == (S.active, S.active)
    ops.complete(t1)
    assert (flow.state, fam.state) == (S.queued, S.queued)
    ops.force(t2, "complete")
    assert (flow.state, fam.state) == (S.complete, S.complete)
    ops.requeue(t2)
    assert (flow.state, fam.state) == (S.queued, S.queued)
    ops.force(t2, "aborted")
    assert (flow.state, fam.state) == (S.aborted, S.aborted)
    ops.suspend(t1)
    assert (t1.state, t1.status) == (S.suspended, S.complete)
    assert fam.state is S.aborted  # aborted outranks suspended
    ops.force(t2, "active")
    assert (flow.state, fam.state) == (S.suspended, S.suspended)
    ops.resume(t1)
    assert (flow.state, fam.state) == (S.active, S.active)
    ops.suspend(fam)
    ops.force(t2, "complete")  # changes under a suspended family
    assert (fam.state, fam.status) == (S.suspended, S.complete)
    assert flow.state is S.suspended
    ops.resume(fam)
    assert (flow.state, fam.state) == (S.complete, S.complete)


def test_adding_and_deleting_children_rederives():
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    a = flow.add_task("a")
    ops.begin(flow)
    ops.force(a, "complete")
    assert flow.state is S.complete
    b = flow.add_task("b")  # unknown does not count
    assert flow.state is S.complete
    ops.force(b, "aborted")
    assert flow.state is S.aborted
    ops.delete(b)
    assert flow.state is S.complete
    assert flow.children == [a]
    with pytest.raises(NodeNotFoundError):
        bunch.find_node("/s/b")


def test_defstatus_applies_at_begin_and_requeue():
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    done = flow.add_family("done")
    done.add_defstatus("complete")
    x = done.add_task("x")
    y = flow.add_task("y")
    y.set_defstatus(S.suspended)
    z = flow.add_task("z")
    held = flow.add_family("held")
    held.add_defstatus("suspended")
    w = held.add_task("w")
    ops.begin(flow)
    assert x.state is S.complete and done.state is S.complete
    # defstatus suspended suspends the node itself; its status is queued
    assert (y.state, y.status, y.suspended) == (S.suspended, S.queued, True)
    assert (held.state, held.suspended, w.state) == (S.suspended, True, S.queued)
    assert z.state is S.queued
    ops.resume(y)
    assert y.state is S.queued
    ops.force(x, "aborted")
    ops.requeue(done)
    assert x.state is S.complete
    ops.requeue(y)
    assert y.state is S.suspended
    with pytest.raises(InvalidValueError):
        z.set_defstatus("bogus")
    assert z.defstatus is None


# ---------------------------------------------------------------- events, meters, labels


def test_events_by_name_and_number():
    flow = Flow("s")
    t = flow.add_task("t")
    e = t.add_event("ready")
    n = t.add_event(3)
    both = t.add_event("go", 7, initial=True)
    assert (e.name, e.number, e.value) == ("ready", None, False)
    assert (n.name, n.number) == ("3", 3)
    assert (both.value, both.initial) == (True, True)
    assert t.find_event("7") is both
    bunch = attached(flow)
    assert t.set_event("ready") == [Change("/s/t", ChangeKind.event, "ready", False, True)]
    assert t.set_event("ready") == []  # no change, no record
    assert t.set_event("7", False) == [Change("/s/t", ChangeKind.event, "go", True, False)]
    assert bunch.drain() == [
        Change("/s/t", ChangeKind.event, "ready", False, True),
        Change("/s/t", ChangeKind.event, "go", True, False),
    ]
    with pytest.raises(AttributeNotFoundError):
        t.set_event("nope")
    with pytest.raises(DuplicateNameError):
        t.add_event("ready")
    with pytest.raises(DuplicateNameError):
        t.add_event("other", 3)
    assert list(t.events) == ["ready", "3", "go"]


def test_meters_are_range_checked_and_unchanged_on_error():
    flow = Flow("s")
    t = flow.add_task("t")
    m = t.add_meter("step", 0, 100, 50)
    assert (m.value, m.threshold) == (0, 50)
    bunch = attached(flow)
    assert t.set_meter("step", 40) == [Change("/s/t", ChangeKind.meter, "step", 0, 40)]
    for bad in (101, -1, "5", 5.0, True):
        with pytest.raises(InvalidValueError):
            t.set_meter("step", bad)  # type: ignore[arg-type]
    assert m.value == 40
    assert bunch.drain() == [Change("/s/t", ChangeKind.meter, "step", 0, 40)]
    with pytest.raises(InvalidValueError):
        t.add_meter("m2", 10, 5)
    with pytest.raises(InvalidValueError):
        t.add_meter("m3", 0, 5, 9)
    with pytest.raises(InvalidValueError):
        t.add_meter("m4", 0.0, 5)  # type: ignore[arg-type]
    with pytest.raises(DuplicateNameError):
        t.add_meter("step", 0, 1)
    with pytest.raises(AttributeNotFoundError):
        t.set_meter("nope", 1)
    assert list(t.meters) == ["step"]


def test_labels_keep_text_and_default():
    flow = Flow("s")
    t = flow.add_task("t")
    label = t.add_label("info", "waiting")
    attached(flow)
    assert t.set_label("info", "running 3/4") == [
        Change("/s/t", ChangeKind.label, "info", "waiting", "running 3/4")
    ]
    assert (label.value, label.default) == ("running 3/4", "waiting")
    assert t.set_label("info", "running 3/4") == []
    with pytest.raises(DuplicateNameError):
        t.add_event("info")  # names are shared between events, meters and labels
    with pytest.raises(AttributeNotFoundError):
        t.set_label("nope", "x")


def test_parameter_changes_are_recorded():
    flow = Flow("s")
    t = flow.add_task("t")
    bunch = attached(flow)
    assert t.set_parameter("V", 1) == [Change("/s/t", ChangeKind.variable, "V", None, 1)]
    assert t.set_parameter("V", "2") == [Change("/s/t", ChangeKind.variable, "V", 1, "2")]
    assert t.delete_parameter("V") == [Change("/s/t", ChangeKind.variable, "V", "2", None)]
    assert bunch.set_parameter("X", 5) == [Change("/", ChangeKind.variable, "X", None, 5)]
    with pytest.raises(AttributeNotFoundError):
        t.delete_parameter("V")
    with pytest.raises(InvalidNameError):
        bunch.set_parameter("bad name", 1)
    assert len(bunch.drain()) == 4


# ---------------------------------------------------------------- expressions, times, repeats


def test_triggers_and_complete_combine_and_bad_text_changes_nothing():
    flow = Flow("s")
    t = flow.add_task("t")
    t.add_trigger("a == complete")
    t.add_trigger("b == complete")
    assert t.trigger is not None and t.trigger.text == "a == complete and b == complete"
    t.add_complete("a == aborted")
    t.add_complete("b:ev")
    assert t.complete_expr is not None and t.complete_expr.text == "a == aborted or b:ev"
    before = t.trigger
    with pytest.raises(ExpressionSyntaxError) as info:
        t.add_trigger("a == ")
    assert isinstance(info.value, ValueError) and info.value.code == "bad_expression"
    assert t.trigger is before


def test_replace_expression_records_and_reindexes():
    flow = Flow("s")
    a, b = flow.add_task("a"), flow.add_task("b")
    t = flow.add_task("t")
    t.add_trigger("a == complete")
    bunch = attached(flow)
    a_done = Change("/s/a", ChangeKind.status, None, "active", "complete")
    b_done = Change("/s/b", ChangeKind.status, None, "active", "complete")
    assert bunch.dependents(a_done) == {t}
    changes = t.replace_expression("trigger", "b == complete")
    assert changes == [
        Change("/s/t", ChangeKind.trigger, "trigger", "a == complete", "b == complete")
    ]
    assert bunch.dependents(a_done) == set() and bunch.dependents(b_done) == {t}
    assert t.replace_expression("trigger", None)[0].new is None
    assert t.trigger is None and bunch.dependents(b_done) == set()
    with pytest.raises(ExpressionSyntaxError):
        t.replace_expression("trigger", "((")
    with pytest.raises(InvalidValueError):
        t.replace_expression("other", "a")
    assert a.trigger is None and b.trigger is None


def test_time_attributes_and_bad_specs():
    t = Flow("s").add_task("t")
    t.add_time("10:00")
    t.add_today("+00:30")
    t.add_date("1.*.*")
    t.add_day("monday")
    t.add_cron("-w 1,2 23:00")
    assert [a.kind for a in t.times] == ["time", "today", "date", "day", "cron"]
    for add, bad in (
        (t.add_time, "25:00"),
        (t.add_today, ""),
        (t.add_date, "32.1.2024"),
        (t.add_day, "someday"),
        (t.add_cron, "-x 1 10:00"),
    ):
        with pytest.raises(TimeSpecError):
            add(bad)
    assert len(t.times) == 5
    late = t.add_late("-s +00:15 -c +02:00")
    assert late.to_text() == "-s +00:15 -c +02:00"
    with pytest.raises(DuplicateNameError):
        t.add_late("-a 20:00")
    with pytest.raises(TimeSpecError):
        Flow("x").add_late("-q 1")


def test_repeat_attribute():
    fam = Flow("s").add_family("f")
    with pytest.raises(RepeatError):
        fam.add_repeat("integer N 1")
    assert fam.repeat is None
    r = fam.add_repeat("integer N 1 3")
    assert (r.name, r.value) == ("N", 1)
    with pytest.raises(DuplicateNameError):
        fam.add_repeat("integer M 1 3")
    assert fam.repeat is r


# ---------------------------------------------------------------- the journal and the dependency index


def test_building_an_attached_tree_journals_additions():
    bunch = Bunch(now=NOW)
    flow = Flow("s")
    bunch.add_flow(flow)
    assert bunch.drain() == [Change("/s", ChangeKind.node_added, None, None, "flow")]
    fam = Family("f")
    fam.add_task("t")
    flow.add_family(fam)
    assert bunch.drain() == [
        Change("/s/f", ChangeKind.node_added, None, None, "family"),
        Change("/s/f/t", ChangeKind.node_added, None, None, "task"),
    ]
    assert bunch.find_node("/s/f/t").bunch is bunch
    assert bunch.drain() == []


def test_attributes_added_to_or_deleted_from_an_attached_node_are_journaled():
    flow = Flow("s")
    t = flow.add_task("t")
    t.add_event("ready", number=3)
    flow.add_task("w").add_trigger("t:3")  # reads the event by its number
    bunch = attached(flow)
    label = t.add_label("note", "hi")
    assert bunch.drain() == [
        Change("/s/t", ChangeKind.attribute, "note", None,
               {"kind": "label", "name": "note", "default": "hi", "value": "hi"}),
    ]  # fmt: skip
    t.add_meter("m", 0, 9, 4)
    assert [(c.name, c.new["kind"], c.new["threshold"]) for c in bunch.drain()] == [("m", "meter", 4)]
    with pytest.raises(InvalidValueError, match="read by the expressions of /s/w"):
        t.delete_attribute("event", "ready")
    with pytest.raises(AttributeNotFoundError):
        t.delete_attribute("meter", "nothing")
    with pytest.raises(InvalidValueError, match="not a 'limit'"):
        t.delete_attribute("limit", "m")
    assert bunch.drain() == [] and "ready" in t.events
    t.delete_attribute("label", "note")
    assert "note" not in t.labels and label.name == "note"
    assert bunch.drain() == [
        Change("/s/t", ChangeKind.attribute, "note",
               {"kind": "label", "name": "note", "default": "hi", "value": "hi"}, None),
    ]  # fmt: skip
    flow.find_node("w").replace_expression("trigger", None)
    bunch.drain()
    t.delete_attribute("event", "3")  # by number, as the trigger named it
    assert t.events == {} and bunch.drain()[0].old["number"] == 3


def test_a_repeat_set_to_one_of_its_values_is_journaled():
    flow = Flow("s")
    fam = flow.add_family("f")
    fam.add_repeat("integer N 0 20 5")
    bunch = attached(flow)
    assert fam.set_repeat_value("15") == [Change("/s/f", ChangeKind.repeat, "N", 0, 3)]
    assert fam.repeat.value == 15 and bunch.drain()[-1].new == 3
    assert fam.set_repeat_value("15") == []  # already there
    with pytest.raises(RepeatError):
        fam.set_repeat_value("7")
    with pytest.raises(AttributeNotFoundError):
        flow.set_repeat_value("1")
    assert fam.repeat.value == 15


def test_delete_flow_forgets_it():
    bunch = Bunch(now=NOW)
    flow = bunch.add_flow(Flow("s"))
    flow.add_task("t")
    bunch.drain()
    assert bunch.delete_flow("s") == [Change("/s", ChangeKind.node_deleted, None, "flow", None)]
    assert flow.bunch is None and bunch.flows == {}
    with pytest.raises(NodeNotFoundError):
        bunch.find_node("/s/t")
    with pytest.raises(NodeNotFoundError):
        bunch.delete_flow("s")
    bunch.add_flow(flow)  # a deleted flow may come back
    assert bunch.find_node("/s/t").name == "t"


def test_dependents_of_each_kind_of_change():
    flow = Flow("s")
    f = flow.add_family("f")
    a = f.add_task("a")
    a.add_event("ev", 2)
    a.add_meter("m", 0, 10)
    f.add_repeat("integer N 0 3")
    flow.add_limit("L", 3)
    by_state = f.add_task("by_state")
    by_state.add_trigger("a == complete")
    by_event = f.add_task("by_event")
    by_event.add_trigger("a:ev")
    by_number = f.add_task("by_number")
    by_number.add_trigger("a:2 == set")
    by_meter = f.add_task("by_meter")
    by_meter.add_complete("a:m > 5")
    by_repeat = flow.add_task("by_repeat")
    by_repeat.add_trigger("/s/f:N >= 2")
    by_var = flow.add_task("by_var")
    by_var.add_trigger("f/a:V == 1")
    by_limit = flow.add_task("by_limit")
    by_limit.add_trigger("/s:L < 2")
    user = f.add_task("user")
    user.add_in_limit("L")
    bunch = attached(flow)

    def deps(path, kind, name=None):
        return bunch.dependents(Change(path, kind, name, None, None))

    assert deps("/s/f/a", ChangeKind.status) == {by_state}
    assert deps("/s/f/a", ChangeKind.event, "ev") == {by_event, by_number}
    assert deps("/s/f/a", ChangeKind.meter, "m") == {by_meter}
    assert deps("/s/f", ChangeKind.repeat, "N") == {by_repeat}
    assert deps("/s/f/a", ChangeKind.variable, "V") == {by_var}
    assert deps("/s/f", ChangeKind.variable, "V") == {by_var}  # inherited by a
    assert deps("/", ChangeKind.variable, "V") == {by_var}
    assert deps("/s/g", ChangeKind.variable, "V") == set()
    assert deps("/s", ChangeKind.limit, "L") == {by_limit}
    assert deps("/s/f/by_state", ChangeKind.status) == set()
    assert deps("/s/f/a", ChangeKind.label, "x") == set()
    ops.delete(by_event)
    assert deps("/s/f/a", ChangeKind.event, "ev") == {by_number}


def test_inlimit_added_after_attach_is_indexed():
    flow = Flow("s")
    flow.add_limit("L", 1)
    t = flow.add_task("t")
    bunch = attached(flow)
    t.add_in_limit("L")
    assert bunch.limit_users("/s", "L") == {t}
    with pytest.raises(DuplicateNameError):
        t.add_in_limit("L")
    with pytest.raises(InvalidValueError):
        t.add_in_limit("M", tokens=0)
    assert len(t.inlimits) == 1


def test_bunch_keeps_its_task_count():
    bunch = Bunch()
    flow = Flow("f")
    flow.add_family("a").add_task("t1")
    bunch.add_flow(flow)
    family = flow.add_family("b")
    family.add_task("t2")
    family.add_family("c").add_task("t3")
    other = Flow("g")
    other.add_task("t")
    bunch.add_flow(other)
    assert bunch.task_count == sum(1 for _ in bunch.tasks()) == 4
    flow.remove_child(family)
    assert bunch.task_count == sum(1 for _ in bunch.tasks()) == 2
    bunch.delete_flow("g")
    assert bunch.task_count == 1
