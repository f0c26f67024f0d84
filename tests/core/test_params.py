"""Parameters: user values inherited down the tree, generated ones, lookup order."""

import datetime as dt
from pathlib import Path

from takler.core import Bunch, Flow, Task, ops
from takler.core.calendar import julian_day
from takler.core.params import variables_for_job
from takler.core.ready import holds, task_ready

NOW = dt.datetime(2024, 5, 1, 9, 30)  # a wednesday


def seed_flow() -> tuple[Bunch, Flow, Task]:
    flow = Flow("test")
    flow.add_parameter("TAKLER_HOME", Path("/home/u/t"))
    fam = flow.add_family("f")
    task = fam.add_task("t1")
    bunch = Bunch(now=NOW)
    bunch.add_flow(flow)
    return bunch, flow, task


def test_user_parameters_are_inherited_and_overridden():
    _, flow, t = seed_flow()
    fam = t.parent
    assert fam is not None
    flow.add_parameter("A", "flow")
    flow.add_parameter("B", "flow")
    fam.add_parameter("B", "family")
    t.add_parameter("C", 3)
    assert (t.find_parameter("A"), t.find_parameter("B"), t.find_parameter("C")) == (
        "flow",
        "family",
        3,
    )
    assert fam.find_parameter("C") is None
    assert t.find_parameter("NOPE") is None


def test_generated_task_parameters():
    _, flow, t = seed_flow()
    gen = t.generated_parameters()
    assert gen == {
        "TASK": "t1",
        "TAKLER_NAME": "/test/f/t1",
        "TAKLER_TRYNO": 0,
        "TAKLER_PASSWORD": "",
        "TAKLER_RID": "",
        "TAKLER_SCRIPT": "/home/u/t/test/f/t1.takler",
        "TAKLER_JOB": "/home/u/t/test/f/t1.job0",
        "TAKLER_JOBOUT": "/home/u/t/test/f/t1.0",
    }
    assert t.find_parameter("FLOW") == "test" and t.find_parameter("FAMILY") == "f"
    ops.begin(flow)
    ops.start_submission(t, "secret")
    ops.record_job(t, "4242", {})
    assert t.find_parameter("TAKLER_TRYNO") == 1
    assert t.find_parameter("TAKLER_PASSWORD") == "secret"
    assert t.find_parameter("TAKLER_RID") == "4242"
    assert t.find_parameter("TAKLER_JOB") == "/home/u/t/test/f/t1.job1"


def test_user_script_and_files_override_generated_paths():
    _, flow, t = seed_flow()
    t.add_parameter("TAKLER_SCRIPT", Path("/home/u/t", "test/task1.takler"))
    assert t.find_parameter("TAKLER_SCRIPT") == "/home/u/t/test/task1.takler"
    assert "TAKLER_SCRIPT" not in t.generated_parameters()
    other = flow.add_task("t2")
    flow.add_parameter("TAKLER_FILES", "/scripts")
    assert other.find_parameter("TAKLER_SCRIPT") == "/scripts/test/t2.takler"


def test_takler_out_moves_outputs_but_not_job_files():
    _, flow, t = seed_flow()
    flow.add_parameter("TAKLER_OUT", "/scratch/out")
    assert t.find_parameter("TAKLER_JOBOUT") == "/scratch/out/test/f/t1.0"
    assert t.find_parameter("TAKLER_JOB") == "/home/u/t/test/f/t1.job0"
    t.add_parameter("TAKLER_JOBOUT", "/exact/t1.out")  # an explicit output still wins
    assert t.find_parameter("TAKLER_JOBOUT") == "/exact/t1.out"


def test_generated_on_a_node_beats_a_user_value_inherited_from_above():
    _, flow, t = seed_flow()
    flow.add_parameter("TASK", "not me")
    assert t.find_parameter("TASK") == "t1"


def test_server_variables_come_last():
    bunch, flow, t = seed_flow()
    bunch.set_parameter("TAKLER_HOST", "node1")
    bunch.set_parameter("TAKLER_PORT", 33083)
    bunch.set_parameter("TAKLER_HOME", "/server/home")
    assert t.find_parameter("TAKLER_HOST") == "node1"
    assert t.find_parameter("TAKLER_PORT") == 33083
    assert t.find_parameter("TAKLER_HOME") == "/home/u/t"  # the flow's own wins
    del flow.parameters["TAKLER_HOME"]
    assert t.find_parameter("TAKLER_HOME") == "/server/home"
    assert Flow("alone").add_task("x").find_parameter("TAKLER_HOST") is None


def test_calendar_parameters_follow_the_flow_clock():
    bunch, _flow, t = seed_flow()
    assert t.find_parameter("TAKLER_DATE") == 20240501
    assert t.find_parameter("YYYY") == "2024"
    assert (t.find_parameter("MM"), t.find_parameter("DD")) == ("05", "01")
    assert t.find_parameter("DOW") == 3
    assert t.find_parameter("DAY") == "wednesday" and t.find_parameter("MONTH") == "may"
    assert t.find_parameter("TIME") == "0930"
    assert t.find_parameter("TAKLER_JULIAN") == julian_day(NOW.date())
    bunch.now = dt.datetime(2025, 1, 2, 23, 5)
    assert t.find_parameter("TAKLER_DATE") == 20250102 and t.find_parameter("TIME") == "2305"
    assert Flow("alone").find_parameter("YYYY") is None  # no bunch, no clock


def test_repeat_values_are_parameters_and_usable_in_triggers():
    _bunch, flow, t = seed_flow()
    fam = t.parent
    assert fam is not None
    fam.add_repeat("date YMD 20240101 20240105")
    flow.add_repeat("integer N 10 12")
    ops.begin(flow)
    assert t.find_parameter("YMD") == "20240101"
    assert t.find_parameter("YMD_MM") == "1"
    assert t.find_parameter("N") == "10"
    fam.repeat.index = 2
    assert t.find_parameter("YMD") == "20240103"
    u = flow.add_task("u")
    u.add_trigger("f:YMD == 20240103 and /test:N == 10")
    ops.requeue(u)
    assert task_ready(u, NOW)


def test_variables_in_triggers():
    _bunch, flow, t = seed_flow()
    t.add_parameter("V", 1)
    t.add_parameter("W", "text")
    u = flow.add_task("u")
    u.add_trigger("f/t1:V == 1")
    ops.begin(flow)
    assert task_ready(u, NOW)
    t.set_parameter("V", "2")
    assert not task_ready(u, NOW)
    u.replace_expression("trigger", "f/t1:W == 0")  # not a number: holds nothing
    assert u.trigger is not None and not holds(u, u.trigger)


def test_all_parameters_name_origin_and_place():
    bunch, _flow, t = seed_flow()
    bunch.set_parameter("S", "server")
    t.add_parameter("V", 1)
    every = t.all_parameters()
    assert every["V"] == (1, "user", "/test/f/t1")
    assert every["TASK"] == ("t1", "generated", "/test/f/t1")
    assert every["FAMILY"] == ("f", "inherited", "/test/f")
    assert every["TAKLER_HOME"] == ("/home/u/t", "inherited", "/test")
    assert every["S"] == ("server", "server", "/")


def test_variables_for_job_are_strings():
    _, flow, t = seed_flow()
    flow.add_parameter("FLAG", True)
    flow.add_parameter("OFF", False)
    flow.add_parameter("RATIO", 0.5)
    out = variables_for_job(t)
    assert (out["FLAG"], out["OFF"], out["RATIO"], out["TAKLER_TRYNO"]) == ("1", "0", "0.5", "0")
    assert all(isinstance(v, str) for v in out.values())


def test_a_task_with_its_own_repeat_looks_parameters_up():
    _, flow, t = seed_flow()
    t.add_repeat("integer N 5 6")
    flow.add_parameter("TAKLER_TRIES", 3)
    assert t.find_parameter("N") == "5"
    assert t.find_parameter("TAKLER_TRIES") == 3
    assert t.find_parameter("TAKLER_JOB") == "/home/u/t/test/f/t1.job0"
    assert ops.tries_allowed(t) == 3
    assert t.generated_parameters()["N"] == "5"
    assert variables_for_job(t)["N"] == "5"
