"""Static checks of a flow before anything runs."""

from __future__ import annotations

from takler.core.errors import TaklerError
from takler.core.node import Flow, Node


def _expr_problems(node: Node, which: str, attr) -> list[str]:  # type: ignore[no-untyped-def]
    from takler.core.bunch import resolve_path
    from takler.core.expression import AttrRef, references
    from takler.core.ready import attribute_value

    out = []
    flow = node.flow
    for ref in references(attr.expr):
        target_path = resolve_path(node, ref.path)
        target = _find(flow, target_path)
        if target is None:
            out.append(f"{node.node_path}: {which} references {ref.path} ({target_path}), which does not exist")
            continue
        if isinstance(ref, AttrRef):
            try:
                attribute_value(target, ref.name)
            except TaklerError:
                value = target.find_parameter(ref.name)
                problem = (
                    f"its value {value!r} is not a number"
                    if value is not None
                    else f"{target_path} has no event, meter, repeat, limit or variable {ref.name}"
                )
                out.append(f"{node.node_path}: {which} references {ref.path}:{ref.name}, but {problem}")
    return out


def _find(flow: Flow, path: str) -> Node | None:
    bunch = flow.bunch
    if bunch is not None:
        return bunch.get_node(path)
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != flow.name:
        return None
    try:
        return flow.find_node("/".join(parts[1:])) if len(parts) > 1 else flow
    except TaklerError:
        return None


def check_flow(flow: Flow) -> list[str]:
    """One line per reference in ``flow`` that does not resolve."""
    from takler.core.limits import find_limit_owner

    problems: list[str] = []
    for node in flow.walk():
        if node.trigger is not None:
            problems += _expr_problems(node, "trigger", node.trigger)
        if node.complete_expr is not None:
            problems += _expr_problems(node, "complete", node.complete_expr)
        for inlimit in node.inlimits:
            if inlimit.path and flow.bunch is None:
                from takler.core.bunch import resolve_path

                owner = _find(flow, resolve_path(node, inlimit.path))
                if owner is None or inlimit.name not in owner.limits:
                    problems.append(f"{node.node_path}: inlimit {inlimit.spec} names no limit")
            elif find_limit_owner(node, inlimit) is None:
                problems.append(f"{node.node_path}: inlimit {inlimit.spec} names no limit")
    return problems
