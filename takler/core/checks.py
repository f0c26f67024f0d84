"""Static checks of a flow before anything runs."""

from __future__ import annotations

from collections.abc import Callable

from takler.core.attributes import ExprAttr
from takler.core.bunch import _resolve, resolve_path, subtree_paths
from takler.core.errors import TaklerError
from takler.core.expression import AttrRef, references_of
from takler.core.limits import find_limit_owner
from takler.core.node import Flow, Node
from takler.core.ready import attribute_value


def _expr_problems(
    node: Node, path: str, which: str, attr: ExprAttr, find: Callable[[str], Node | None]
) -> list[str]:
    out = []
    base = path.rpartition("/")[0]
    for ref in references_of(attr.expr):
        # As resolve_path(node, ref.path), from the path already known.
        target_path = _resolve(base, ref.path)
        target = find(target_path)
        if target is None:
            out.append(
                f"{path}: {which} references {ref.path} ({target_path}), which does not exist"
            )
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
                out.append(f"{path}: {which} references {ref.path}:{ref.name}, but {problem}")
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


def _finder(flow: Flow, paths: dict[str, Node]) -> Callable[[str], Node | None]:
    """Node by path: the bunch's index, or for a detached flow ``paths``,
    falling back to a walk for a path not held as written (``/f/../t``)."""
    bunch = flow.bunch
    if bunch is not None:
        return bunch.get_node

    def find(path: str) -> Node | None:
        node = paths.get(path)
        return node if node is not None else _find(flow, path)

    return find


def check_flow(flow: Flow, paths: dict[str, Node] | None = None) -> list[str]:
    """One line per reference in ``flow`` that does not resolve.

    ``paths``: each node of the flow by its path, parents first, if known
    (see :func:`takler.codec.load_flow`).
    """
    if paths is None:
        paths = subtree_paths(flow)
    problems: list[str] = []
    find = _finder(flow, paths)
    for path, node in paths.items():
        if node.trigger is not None:
            problems += _expr_problems(node, path, "trigger", node.trigger, find)
        if node.complete_expr is not None:
            problems += _expr_problems(node, path, "complete", node.complete_expr, find)
        for inlimit in node.inlimits:
            if inlimit.path and flow.bunch is None:
                owner = _find(flow, resolve_path(node, inlimit.path))
                if owner is None or inlimit.name not in owner.limits:
                    problems.append(f"{path}: inlimit {inlimit.spec} names no limit")
            elif find_limit_owner(node, inlimit) is None:
                problems.append(f"{path}: inlimit {inlimit.spec} names no limit")
    return problems
