"""Loading .def text into flows: every statement kind, and clear refusals."""

from __future__ import annotations

import textwrap

import pytest

from takler.core import Family, Flow, NodeStatus, Task
from takler.core.errors import DefinitionError, UnsupportedFeatureError
from takler.ecflow import flows_from_def, flows_from_def_file
from takler.ecflow.defs import parse_def


def load(text: str) -> list[Flow]:
    return flows_from_def(textwrap.dedent(text), "t.def")


def one(text: str) -> Flow:
    (flow,) = load(text)
    return flow


def refused(text: str, pattern: str, kind: type[Exception] = DefinitionError) -> None:
    with pytest.raises(kind, match=pattern):
        load(text)


def test_tree_of_suites_families_and_tasks() -> None:
    flows = load(
        """
        suite s1
          family f
            task t1
            family g
              task t2
              endtask
            endfamily
            task t3
          endfamily
          task t4
        endsuite
        suite s2; task a; endsuite
        """
    )
    assert [f.name for f in flows] == ["s1", "s2"]
    s1 = flows[0]
    f = s1.children[0]
    assert isinstance(f, Family) and [c.name for c in f.children] == ["t1", "g", "t3"]
    assert isinstance(s1.children[1], Task) and s1.children[1].name == "t4"
    assert s1.find_node("f/g/t2").node_path == "/s1/f/g/t2"


def test_parse_def_gives_statements_with_lines() -> None:
    parsed = parse_def("suite s\n  edit A 1\n  task t\n    event e\nendsuite\n")
    (suite,) = parsed.suites
    assert [(st.line, st.keyword) for st in suite.attributes] == [(2, "edit")]
    assert [(st.line, st.keyword, st.args) for st in suite.children[0].attributes] == [
        (4, "event", ("e",))
    ]


def test_edit_values_and_quotes() -> None:
    flow = one(
        """
        suite s
          edit A 'one two'
          edit B "say 'hi'"
          edit C plain value
          edit D ''
          edit A replaced
        endsuite
        """
    )
    assert flow.parameters == {"A": "replaced", "B": "say 'hi'", "C": "plain value", "D": ""}


def test_ecf_variables_get_their_takler_twin() -> None:
    flow = one("suite s\n edit ECF_HOME /h\n edit ECF_TRIES 3\n edit ECF_INCLUDE /i\nendsuite")
    assert flow.parameters["TAKLER_HOME"] == "/h"
    assert flow.parameters["ECF_HOME"] == "/h"
    assert flow.parameters["TAKLER_TRIES"] == "3"
    assert flow.parameters["TAKLER_INCLUDE"] == "/i"


def test_definition_level_edit_reaches_every_suite() -> None:
    a, b = load("edit X 1\nedit ECF_HOME /h\nsuite a\nendsuite\nsuite b\n edit X 2\nendsuite")
    assert a.parameters["X"] == "1" and b.parameters["X"] == "2"
    assert a.parameters["TAKLER_HOME"] == "/h"


def test_events_meters_labels() -> None:
    flow = one(
        """
        suite s
          task t
            event 1
            event 2 two
            event named
            event lit set
            meter m -1 10 5
            meter n 0 3
            label l "first\\nsecond"
            label e ""
        endsuite
        """
    )
    t = flow.children[0]
    assert {n: (e.number, e.initial) for n, e in t.events.items()} == {
        "1": (1, False),
        "two": (2, False),
        "named": (None, False),
        "lit": (None, True),
    }
    assert (t.meters["m"].minimum, t.meters["m"].maximum, t.meters["m"].threshold) == (-1, 10, 5)
    assert t.meters["n"].threshold is None
    assert t.labels["l"].default == "first\nsecond"
    assert t.labels["e"].default == ""


def test_limits_and_inlimits_with_options() -> None:
    flow = one(
        """
        suite s
          limit L 4
          family f
            limit sub 2
            inlimit -n L
            inlimit -s sub 2
            task t
              inlimit /s:L
              inlimit ../f:sub
        endsuite
        """
    )
    f = flow.children[0]
    assert isinstance(f, Family)
    assert [(i.spec, i.tokens, i.node_only, i.submission_only) for i in f.inlimits] == [
        ("L", 1, True, False),
        ("sub", 2, False, True),
    ]
    t = f.children[0]
    # ecFlow: '..' from t climbs above its parent f, so ../f is /s/f
    assert [i.spec for i in t.inlimits] == ["/s:L", "../f:sub"]


def test_trigger_and_complete_with_continuations() -> None:
    flow = one(
        """
        suite s
          family f
            task a
              event ev
            task b
            task c
              trigger a == complete
              trigger -a b == complete
              trigger -o a == aborted
              complete a:ev
              complete -o b == complete
        endsuite
        """
    )
    c = flow.find_node("f/c")
    assert c.trigger is not None and c.complete_expr is not None
    assert c.trigger.text == "a == complete and b == complete or a == aborted"
    assert c.complete_expr.text == "a:ev or b == complete"


def test_repeat_time_cron_late_defstatus_clock_autocancel() -> None:
    flow = one(
        """
        suite s
          clock hybrid 01.01.2006 +02:00
          repeat date YMD 20200101 20200105 1
          defstatus suspended
          late -s +00:15 -c +02:00
          family f
            autocancel +01:00
            time 10:00
            today 00:00 06:00 01:00
            date 1.*.*
            day monday
            cron -w 0, 1 -m 5,6 10:00
            task t
        endsuite
        """
    )
    assert flow.clock == "hybrid 01.01.2006 +02:00"
    assert flow.repeat is not None and flow.repeat.to_text() == "date YMD 20200101 20200105 1"
    assert flow.defstatus is NodeStatus.suspended
    assert flow.late is not None
    f = flow.children[0]
    assert f.autocancel == "+01:00"
    assert [a.kind for a in f.times] == ["time", "today", "date", "day", "cron"]


def test_triggers_resolve_like_ecflow_and_are_rewritten_when_takler_differs() -> None:
    flow = one(
        """
        suite s
          family f1
            trigger f2/a == complete
            family f2
              task a
            endfamily
          endfamily
        endsuite
        """
    )
    # ecFlow finds f2/a under f1 itself; takler's rule would look beside f1.
    f1 = flow.children[0]
    assert f1.trigger is not None and f1.trigger.text == "/s/f1/f2/a == complete"


def test_extern_allows_references_outside_the_definition() -> None:
    flow = one(
        """
        extern /other/f/t
        extern /limits:big
        suite s
          task t
            trigger /other/f/t == complete
            inlimit /limits:big
        endsuite
        """
    )
    assert flow.children[0].inlimits[0].spec == "/limits:big"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("suite s\n task t\n  trigger z == complete\nendsuite", r"t\.def:3: trigger references z"),
        ("suite s\n task t\n  trigger /x/y == complete\nendsuite", r"t\.def:3: .*extern"),
        ("suite s\n task t\n  trigger t:nope\nendsuite", r"t\.def:3: .*no event, meter"),
        ("suite s\n task t\n  trigger t\nendsuite", r"t\.def:3: .*alone is not a condition"),
        (
            "suite s\n task t\n  meter m 0 9\n  trigger t:m / 0 == 1\nendsuite",
            r":4: .*division by zero",
        ),
        ("suite s\n task t\n  trigger t ==\nendsuite", r"t\.def:3: bad expression"),
        ("suite s\n task t\n  trigger -a t == complete\nendsuite", r":3: the first trigger"),
        ("suite s\n task t\n  trigger 1 == 1\n  trigger 1 == 1\nendsuite", r":4: second trigger"),
        ("suite s\n trigger 1 == 1\nendsuite", r":2: trigger is not allowed on a suite"),
        ("suite s\n time 10:00\nendsuite", r":2: time is not allowed on a suite"),
        ("suite s\n task t\n  time 25:00\nendsuite", r":3: bad time"),
        ("suite s\n task t\n  time 00:00 01:00 02:00\nendsuite", r":3: .*increment"),
        ("suite s\n task t\n  event e\n  event e\nendsuite", r":4: .*already exists"),
        ("suite s\n task t\n  meter m 0 10 20\nendsuite", r":3: .*threshold"),
        ("suite s\n task t\n task t\nendsuite", r":3: .*already exists"),
        ("suite s\n edit\nendsuite", r":2: edit needs a name and a value"),
        ("suite s\n edit X # comment\nendsuite", r":2: edit needs"),
        ("suite\nendsuite", r":1: suite name missing"),
        ("suite s\n family f\nsuite t\nendsuite", r":3: suite t inside suite s"),
        ("suite s\n endfamily\nendsuite", r":2: endfamily without family"),
        ("task t", r":1: task outside a suite"),
        ("suite s\n wibble 3\nendsuite", r":2: unknown keyword 'wibble'"),
        ("suite s\n defstatus complete\n defstatus queued\nendsuite", r":3: defstatus given twice"),
        ("suite s\n repeat day 1\n cron 10:00\nendsuite", r":3: .*repeat and a cron"),
        ("suite s\n inlimit L\nendsuite", r":2: inlimit L: no limit L"),
        ("suite s\n task t\n  inlimit /s:L\nendsuite", r":3: inlimit /s:L: /s has no limit L"),
        ("suite s\n clock real 31.02.2020\nendsuite", r":2: bad clock date"),
        ("suite s\n autocancel soon\nendsuite", r":2: bad autocancel"),
        ("suite s\nendsuite\nsuite s\nendsuite", r":3: suite s defined twice"),
        ("extern\n", r":1: extern takes one path"),
        ("suite s\n task -x\nendsuite", r":2: bad name '-x'"),
        ('suite s\n task t\n  event "1"\nendsuite', r":3: bad event name"),
    ],
)
def test_refusals_name_the_line(text: str, pattern: str) -> None:
    refused(text, pattern)


@pytest.mark.parametrize(
    ("text", "feature"),
    [
        ("suite s\n zombie ecf:fob::\nendsuite", "zombie"),
        ("suite s\n queue q a b\nendsuite", "queue"),
        ("suite s\n family f\n  autoarchive 0\n endfamily\nendsuite", "autoarchive"),
        ("suite s\n generic a b\nendsuite", "generic"),
        ("suite s\n task t\n  trigger /s/t<flag>late\nendsuite", "node flags"),
        ("suite s\n task t\n  trigger :X == 1\nendsuite", "parent-variable"),
        ("suite s\n task t\n  cron +00:00 23:00 01:00\nendsuite", "relative cron"),
        (
            "suite s\n repeat datetime X 20000101T000000 20000105T000000\nendsuite",
            "repeat datetime",
        ),
    ],
)
def test_unsupported_features_are_refused_by_name(text: str, feature: str) -> None:
    with pytest.raises(UnsupportedFeatureError, match=rf"t\.def:\d+: {feature}"):
        load(text)


def test_unsupported_feature_after_good_lines_loads_nothing() -> None:
    with pytest.raises(UnsupportedFeatureError, match=r"t\.def:4: mirror"):
        load("suite s\n task a\n task b\n  mirror --name x\nendsuite\n")


def test_simulator_only_attributes_are_checked_then_left_out() -> None:
    flow = one("suite s\n clock real 300\n endclock 400\n verify complete:3\n task t\nendsuite")
    assert flow.clock == "real 300"
    refused("suite s\n verify complete\nendsuite", r":2: verify takes")


def test_state_form_restores_states_and_values() -> None:
    flow = one(
        """
        defs_state MIGRATE
        suite s
          repeat enumerated E "a" "b" "c" # 2
          task t # state:complete
            event e # set
            meter m 0 10 # 7
            label l "" # "now"
          task u # state:aborted suspended:1
        endsuite
        """
    )
    t, u = flow.children
    assert t.status is NodeStatus.complete and u.status is NodeStatus.aborted
    assert u.suspended and not t.suspended
    assert t.events["e"].value is True
    assert t.meters["m"].value == 7
    assert t.labels["l"].value == "now"
    assert flow.repeat.value == "c"


def test_checkpoints_keep_no_externs_so_their_references_are_not_checked() -> None:
    # ecFlow writes checkpoints without extern lines and loads them unchecked.
    flow = one(
        """
        defs_state MIGRATE cal_count:0
        edit ECF_HOME '.' # server
        suite s # begun:1 state:active
          task t # try:1 state:active passwd:x rid:12
            trigger /elsewhere/x == complete
            inlimit /limits:c1a
        endsuite
        """
    )
    task = flow.children[0]
    assert task.status is NodeStatus.active
    assert "ECF_HOME" not in flow.parameters
    assert task.inlimits[0].spec == "/limits:c1a"


def test_file_errors_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.def"
    path.write_text("suite s\n task t\n  event\nendsuite\n")
    with pytest.raises(DefinitionError, match=r"x\.def:3: event takes"):
        flows_from_def_file(path)
    with pytest.raises(DefinitionError, match=r"nope\.def: cannot read"):
        flows_from_def_file(tmp_path / "nope.def")
