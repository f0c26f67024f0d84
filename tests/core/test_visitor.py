"""takler.visitor: depth-first walk and the tutorial's tree printout."""

import io

from takler.core import Bunch, Flow, Node, ops
from takler.visitor import PrintVisitor, pre_order_travel


def test_print_visitor_prints_the_seed_tree_exactly():
    flow = Flow("test")
    flow.add_task("t1")
    out = io.StringIO()
    pre_order_travel(flow, PrintVisitor(out))
    assert out.getvalue() == "|- test [unknown]\n  |- t1 [unknown]\n"


def test_deeper_trees_indent_two_spaces_per_level_and_show_states():
    flow = Flow("s")
    f = flow.add_family("f")
    f.add_task("a")
    f.add_family("g").add_task("b")
    flow.add_task("c")
    Bunch().add_flow(flow)
    ops.begin(flow)
    ops.suspend(f)
    out = io.StringIO()
    pre_order_travel(flow, PrintVisitor(out))
    assert out.getvalue() == (
        "|- s [suspended]\n"
        "  |- f [suspended]\n"
        "    |- a [queued]\n"
        "    |- g [queued]\n"
        "      |- b [queued]\n"
        "  |- c [queued]\n"
    )


def test_pre_order_travel_visits_parents_first_with_levels():
    flow = Flow("s")
    f = flow.add_family("f")
    f.add_task("a")
    flow.add_task("c")
    seen: list[tuple[str, int]] = []

    class Collect:
        def visit(self, node: Node, level: int) -> None:
            seen.append((node.node_path, level))

    pre_order_travel(flow, Collect())
    assert seen == [("/s", 0), ("/s/f", 1), ("/s/f/a", 2), ("/s/c", 1)]
    seen.clear()
    pre_order_travel(f, Collect(), level=3)
    assert seen == [("/s/f", 3), ("/s/f/a", 4)]


def test_a_deep_chain_does_not_hit_the_recursion_limit():
    node = Flow("s")
    for i in range(3000):
        node = node.add_family(f"f{i}")
    count = 0

    class Count:
        def visit(self, node: Node, level: int) -> None:
            nonlocal count
            count += 1

    pre_order_travel(node.flow, Count())
    assert count == 3001
