"""Reading flow files: Python modules, ecFlow .def files, JSON dumps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from takler.core import Flow
from takler.core.errors import DefinitionError
from takler_cli.flowfile import load_flows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_seed_test_py_gives_its_flow_without_running_main(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flows = load_flows(EXAMPLES / "seed" / "test.py")
    assert [f.name for f in flows] == ["test"]
    t1 = flows[0].find_node("t1")
    assert t1.parameters["TAKLER_SCRIPT"] == str(EXAMPLES / "seed" / "test" / "task1.takler")
    assert flows[0].parameters["TAKLER_HOME"] == str(EXAMPLES / "seed")
    # main() prints the tree and starts a server: importing must do neither.
    assert capsys.readouterr().out == ""


def test_seed_script_template_uses_the_standard_includes() -> None:
    text = (EXAMPLES / "seed" / "test" / "task1.takler").read_text()
    assert text.startswith('{% include "head.takler" %}')
    assert text.rstrip().endswith('{% include "tail.takler" %}')


def test_module_level_flows_are_collected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flows.py",
        """
        from takler.core import Flow

        first = Flow("first")
        first.add_task("a")
        second = Flow("second")
        not_a_flow = 42
        """,
    )
    assert sorted(f.name for f in load_flows(path)) == ["first", "second"]


def test_create_flows_result_wins_over_a_module_flow_of_the_same_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.py",
        """
        from takler.core import Flow

        shadow = Flow("one")

        def create_flows():
            one = Flow("one")
            one.add_task("made_by_function")
            return [one, Flow("two")]
        """,
    )
    flows = {f.name: f for f in load_flows(path)}
    assert sorted(flows) == ["one", "two"]
    assert flows["one"].find_node("made_by_function").name == "made_by_function"


def test_create_flow_receives_the_home_when_it_asks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "homed.py",
        """
        from takler.core import Flow

        def create_flow(home):
            flow = Flow("homed")
            flow.add_parameter("TAKLER_HOME", home)
            return flow
        """,
    )
    (flow,) = load_flows(path, home=tmp_path / "server-home")
    assert flow.parameters["TAKLER_HOME"] == str(tmp_path / "server-home")


def test_demo_example_writes_its_scripts_under_the_home(tmp_path: Path) -> None:
    (flow,) = load_flows(EXAMPLES / "demo.py", home=tmp_path)
    assert flow.name == "demo"
    tasks = [t.node_path for t in flow.tasks()]
    assert len(tasks) == 7
    for path in tasks:
        assert (tmp_path / f"{path.lstrip('/')}.takler").is_file()


def test_syntax_error_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "broken.py", "from takler.core import Flow\n\nflow = Flow('x'\nx = 1 +\n"
    )
    with pytest.raises(DefinitionError) as info:
        load_flows(path)
    message = str(info.value)
    assert "\n" not in message
    assert "broken.py" in message
    assert "line 3" in message or "line 4" in message
    assert "syntax error" in message


def test_exception_while_importing_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "raises.py", "x = 1\ny = {}['missing']\n")
    with pytest.raises(DefinitionError, match=r"raises\.py line 2: import failed: KeyError"):
        load_flows(path)


def test_error_inside_create_flow_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad_flow.py",
        """
        from takler.core import Flow

        def create_flow():
            flow = Flow("f")
            flow.add_task("t").add_trigger("t1 ==")
            return flow
        """,
    )
    with pytest.raises(DefinitionError) as info:
        load_flows(path)
    assert "bad_flow.py line 6: create_flow() failed" in str(info.value)
    assert "bad expression" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no such file"):
        load_flows(tmp_path / "nope.py")


def test_a_file_without_flows_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.py", "x = 1\n")
    with pytest.raises(DefinitionError, match="defines no flow"):
        load_flows(path)


def test_create_flow_must_return_flows(tmp_path: Path) -> None:
    path = write(tmp_path, "wrong.py", "def create_flow():\n    return 'flow'\n")
    with pytest.raises(DefinitionError, match="must return Flow objects, not str"):
        load_flows(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "flow.yaml", "x: 1\n")
    with pytest.raises(DefinitionError, match=r"expected a \.py, \.def or \.json"):
        load_flows(path)


def test_def_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "suite.def",
        """
        suite s
          family f
            task t1
            task t2
              trigger t1 == complete
          endfamily
        endsuite
        """,
    )
    (flow,) = load_flows(path)
    assert isinstance(flow, Flow)
    assert flow.find_node("f/t2").trigger is not None


def test_json_dump(tmp_path: Path) -> None:
    codec = pytest.importorskip("takler.codec")
    if not hasattr(codec, "load_flow"):
        pytest.skip("takler.codec.load_flow not available yet")
    flow = Flow("dumped")
    flow.add_family("f").add_task("t")
    path = tmp_path / "dumped.json"
    path.write_text(json.dumps(codec.dump_node(flow, state=False)))
    (loaded,) = load_flows(path)
    assert loaded.find_node("f/t").node_path == "/dumped/f/t"


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{\n  "kind": "flow",\n  oops\n}\n')
    with pytest.raises(DefinitionError, match=r"bad\.json line 3: bad JSON"):
        load_flows(path)
