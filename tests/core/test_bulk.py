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


# ---------------------------------------------------------------- loading a big flow in one go


def _scale_flow() -> Flow:
    flow = Flow("s")
    flow.add_limit("L", 2)
    for k in range(3):
        fam = flow.add_family(f"f{k}")
        for j in range(4):
            task = fam.add_task(f"t{j}")
            task.add_parameter("V", j)
            task.add_trigger("t1 != aborted" if j == 0 else f"t{j - 1} == complete")
        fam.add_task("x").add_complete("../f0/t0:V == 1 or ../f0/t1 == complete")
        fam.add_in_limit("L")
    return flow


def _index_of(bunch: Bunch) -> tuple:
    return (
        dict(bunch._paths),
        {k: v if isinstance(v, set) else {v} for k, v in bunch._deps.items()},
        {k: v if isinstance(v, set) else {v} for k, v in bunch._var_deps.items()},
        dict(bunch._limit_keys),
        bunch.task_count,
    )


def test_a_fresh_node_has_every_field_at_its_default() -> None:
    # Task, Family and Flow have a quicker __init__ than attrs' own (node._quick_init).
    import attrs

    for cls in (Task, Family, Flow):
        node = cls("n")
        for field in attrs.fields(cls):
            value = getattr(node, field.name)
            if field.name == "name":
                assert value == "n"
            elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                assert value == field.default.factory()
                assert value is not getattr(cls("m"), field.name)  # each its own
            else:
                assert value is field.default, field.name
    with pytest.raises(InvalidNameError):
        Task("bad name")


def test_load_flow_gives_paths_that_check_and_add_flow_take() -> None:
    from takler.codec import dump_node, load_flow

    data = dump_node(_scale_flow(), state=False)
    paths: dict = {}
    flow = load_flow(data, paths=paths)
    walked = list(flow.walk())
    assert list(paths.values()) == walked  # parents first, in order
    assert list(paths) == [n.node_path for n in walked]
    assert flow.check(paths) == flow.check() == []
    with_paths, plain = Bunch(), Bunch()
    with_paths.add_flow(flow, paths=paths)
    plain.add_flow(load_flow(data))
    assert [(c.path, c.kind) for c in with_paths.drain()] == [
        (c.path, c.kind) for c in plain.drain()
    ]
    assert {p: n.node_path for p, n in with_paths._paths.items()} == {
        p: n.node_path for p, n in plain._paths.items()
    }
    assert with_paths.task_count == plain.task_count == 15
    x = with_paths.find_node("/s/f2/x")
    assert x.complete_expr is not None
    assert x.complete_expr.targets == ("/s/f0/t0", "/s/f0/t1")
    assert x.complete_expr.abs_paths == dict(
        zip(references_of(x.complete_expr.expr), ("/s/f0/t0", "/s/f0/t1"), strict=True)
    )


def test_add_flow_without_journal_indexes_the_same() -> None:
    quiet, loud = Bunch(), Bunch()
    quiet.add_flow(_scale_flow(), journal=False)
    loud.add_flow(_scale_flow())
    assert quiet.drain() == []
    assert len(loud.drain()) == 1 + 3 * 6
    assert {k: {n.node_path for n in v} for k, v in _index_of(quiet)[1].items()} == {
        k: {n.node_path for n in v} for k, v in _index_of(loud)[1].items()
    }


def test_a_flow_whose_paths_are_taken_leaves_the_bunch_as_it_was() -> None:
    bunch = Bunch()
    bunch.add_flow(_scale_flow())
    before = _index_of(bunch)
    other = _scale_flow()
    paths = {n.node_path.replace("/s", "/o", 1): n for n in other.walk()}
    paths["/s/f0"] = other.child("f0")  # a stale map naming a path the bunch holds
    other.name = "o"
    with pytest.raises(DuplicateNameError, match="/s/f0 already exists"):
        bunch.add_flow(other, paths=paths)
    assert list(bunch.flows) == ["s"] and other.bunch is None
    assert _index_of(bunch) == before


def test_deleting_a_node_unindexes_its_expressions() -> None:
    bunch = Bunch()
    flow = bunch.add_flow(_scale_flow())
    x = bunch.find_node("/s/f1/x")
    assert x.complete_expr is not None and x.complete_expr.targets
    attr = x.complete_expr
    x.parent.remove_child(x)  # type: ignore[union-attr]
    assert attr.targets == () and attr.abs_paths == {}
    assert all(x not in ({v} if not isinstance(v, set) else v) for v in bunch._deps.values())
    assert flow.check() == []
