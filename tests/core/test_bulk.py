"""Building and attaching big trees: bulk children, cached paths and references."""

from __future__ import annotations

import pytest

from takler.core import Bunch, Family, Flow, Task
from takler.core.attributes import check_name
from takler.core.errors import DuplicateNameError, InvalidNameError, InvalidValueError
from takler.core.expression import parse_expression, references, references_of
from takler.core.status import NodeStatus


def test_add_children_derives_the_state_once_and_in_order() -> None:
    fam = Family("f")
    done = Task("b")
    done._status = NodeStatus.aborted
    fam.add_children([Task("a"), done, Task("c")])
    assert [c.name for c in fam.children] == ["a", "b", "c"]
    assert all(c.parent is fam for c in fam.children)
    assert fam.state is NodeStatus.aborted
    assert fam.child("c").node_path == "/f/c"


@pytest.mark.parametrize("attached", [False, True])
def test_add_children_adds_all_or_none(attached: bool) -> None:
    flow = Flow("s")
    fam = flow.add_family("f")
    fam.add_task("a")
    if attached:
        Bunch().add_flow(flow)
    with pytest.raises(DuplicateNameError):
        fam.add_children([Task("x"), Task("a")])
    with pytest.raises(DuplicateNameError):
        fam.add_children([Task("y"), Task("y")])
    with pytest.raises(InvalidValueError):
        fam.add_children([Task("z"), Flow("nope")])
    assert [c.name for c in fam.children] == ["a"]


def test_paths_follow_attach_and_detach() -> None:
    bunch = Bunch()
    flow = Flow("s")
    fam = flow.add_family("f")
    task = fam.add_task("t")
    bunch.add_flow(flow)
    assert task.node_path == "/s/f/t" and bunch.is_attached(task)
    fam.remove_child(task)
    assert task.node_path == "/t" and not bunch.is_attached(task)
    other = flow.add_family("g")
    other.add_child(task)
    assert task.node_path == "/s/g/t" and bunch.find_node("/s/g/t") is task
    bunch.delete_flow("s")
    assert task.node_path == "/s/g/t" and not bunch.is_attached(task)
    assert bunch.get_node("/s/g/t") is None


def test_references_are_shared_per_tree() -> None:
    expr = parse_expression("a == complete and b:x > 1 and a == aborted")
    assert references_of(expr) is references_of(expr)
    assert references(expr) == list(references_of(expr))
    assert [r.path for r in references(expr)] == ["a", "b"]


def test_check_name_still_refuses_after_valid_names_are_remembered() -> None:
    assert check_name("t1") == "t1"
    assert check_name("t1") == "t1"
    for bad in ("", ".", "..", "-x", "a b", "x" * 300):
        with pytest.raises(InvalidNameError):
            check_name(bad)
    with pytest.raises(InvalidNameError):
        check_name(1)
