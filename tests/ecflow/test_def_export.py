"""export_def: ecFlow text from flows built in Python or loaded from a .def."""

from __future__ import annotations

import pytest

from takler.core import Flow, NodeStatus, ops
from takler.core.errors import DefinitionError
from takler.ecflow import export_def, flows_from_def


def sample() -> Flow:
    flow = Flow("s")
    flow.add_parameter("TAKLER_HOME", "/h")
    flow.add_limit("L", 2)
    flow.clock = "real"
    fam = flow.add_family("f")
    fam.add_repeat("enumerated E a b c")
    fam.add_in_limit("L", 1, node_only=True)
    t1 = fam.add_task("t1")
    t1.add_event("go")
    t1.add_event(3)
    t1.add_meter("m", 0, 10, 8)
    t1.add_label("l", "hello")
    t1.add_time("10:00")
    t1.add_late("-c +01:00")
    t2 = fam.add_task("t2")
    t2.add_trigger("t1 == complete")
    t2.add_trigger("t1:go")
    t2.add_complete("t1:m >= 5")
    t2.set_defstatus(NodeStatus.complete)
    return flow


def test_export_writes_ecflow_syntax_in_ecflow_order() -> None:
    text = export_def([sample()])
    assert text.splitlines()[1:] == [
        "suite s",
        "  edit ECF_HOME '/h'",
        "  limit L 2",
        "  clock real",
        "  family f",
        '    repeat enumerated E "a" "b" "c"',
        "    inlimit -n L",
        "    task t1",
        "      late -c +01:00",
        '      label l "hello"',
        "      meter m 0 10 8",
        "      event go",
        "      event 3",
        "      time 10:00",
        "    task t2",
        "      defstatus complete",
        "      complete t1:m >= 5",
        "      trigger t1 == complete and t1:go",
        "  endfamily",
        "endsuite",
        "# enddef",
    ]


def test_export_then_load_gives_the_same_flow() -> None:
    text = export_def([sample()])
    (flow,) = flows_from_def(text)
    assert flow.parameters == {"ECF_HOME": "/h", "TAKLER_HOME": "/h"}
    assert export_def([flow]) == text


def test_state_round_trip() -> None:
    flow = sample()
    t1 = flow.find_node("f/t1")
    ops.force(t1, NodeStatus.complete)
    t1.set_event("go", True)
    t1.set_meter("m", 6)
    t1.set_label("l", "two\nlines")
    flow.children[0].repeat.set_value("b")
    ops.suspend(flow.find_node("f/t2"))
    text = export_def([flow], with_state=True)
    assert "defs_state MIGRATE" in text
    (back,) = flows_from_def(text)
    b1 = back.find_node("f/t1")
    assert b1.status is NodeStatus.complete
    assert b1.events["go"].value and b1.meters["m"].value == 6
    assert b1.labels["l"].value == "two\nlines"
    assert back.children[0].repeat.value == "b"
    assert back.find_node("f/t2").suspended
    assert export_def([back], with_state=True) == text


def test_references_outside_the_flows_become_externs() -> None:
    flow = Flow("s")
    task = flow.add_task("t")
    task.add_trigger("/other/x == complete and /other/y:ev")
    task.add_in_limit("/lims:big")
    head = export_def([flow]).splitlines()[:4]
    assert head[1:] == ["extern /other/x", "extern /other/y:ev", "extern /lims:big"]


def test_relative_paths_both_read_alike_stay_relative() -> None:
    flow = Flow("s")
    f1 = flow.add_family("f1")
    flow.add_family("f2").add_task("a")
    f1.add_trigger("f2/a == complete and ./f2 == complete")
    assert "    trigger f2/a == complete and ./f2 == complete" in export_def([flow])


def test_dangling_relative_path_is_written_absolute_as_takler_reads_it() -> None:
    flow = Flow("s")
    f1 = flow.add_family("f1")
    f1.add_family("f2").add_task("a")
    # takler reads f2/a beside f1 (/s/f2/a, absent); ecFlow would fall back to /s/f1/f2/a
    f1.add_trigger("f2/a == complete")
    text = export_def([flow])
    assert "extern /s/f2/a" in text and "trigger /s/f2/a == complete" in text


def test_names_ecflow_refuses_are_reported() -> None:
    flow = Flow("s")
    flow.add_task("bad-name")
    with pytest.raises(
        DefinitionError, match=r"/s/bad-name: task 'bad-name' is not a valid ecFlow name"
    ):
        export_def([flow])
