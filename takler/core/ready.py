"""What holds a node back: expression evaluation, time and readiness checks.

All pure: the caller passes ``now`` (the flow clock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from takler.core.attributes import ExprAttr
from takler.core.errors import ExpressionError, TaklerError
from takler.core.node import Node, Task
from takler.core.status import NodeStatus

_CLOCK_KINDS = frozenset({"time", "today", "cron"})


def make_resolver(owner: Node, attr: ExprAttr):  # type: ignore[no-untyped-def]
    """A resolver for :func:`takler.core.expression.evaluate` in ``owner``'s context."""
    from takler.core.bunch import resolve_path
    from takler.core.expression import NodeRef

    bunch = owner.bunch
    paths = attr.abs_paths

    def resolve(ref):  # type: ignore[no-untyped-def]
        target = paths.get(ref) or resolve_path(owner, ref.path)
        node = bunch.get_node(target) if bunch is not None else None
        if node is None:
            raise ExpressionError(f"{ref.path}: no node {target}")
        if isinstance(ref, NodeRef):
            return node.state
        return attribute_value(node, ref.name)

    return resolve


def attribute_value(node: Node, name: str) -> object:
    """The value ``path:name`` has in an expression."""
    event = node.events.get(name)
    if event is None and name.isdigit():
        event = next((e for e in node.events.values() if e.number == int(name)), None)
    if event is not None:
        return event.value
    meter = node.meters.get(name)
    if meter is not None:
        return meter.value
    if node.repeat is not None and node.repeat.name == name:
        return node.repeat.expr_value()
    limit = node.limits.get(name)
    if limit is not None:
        return limit.value
    value = node.find_parameter(name)
    if value is None:
        raise ExpressionError(
            f"{node.node_path}:{name}: no event, meter, repeat, limit or variable {name}"
        )
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ExpressionError(
            f"{node.node_path}:{name}: variable value {value!r} is not an integer"
        ) from None


def holds(owner: Node, attr: ExprAttr | None) -> bool:
    """True when the expression holds (or was freed); a bad reference holds nothing."""
    from takler.core.expression import evaluate

    if attr is None or attr.freed:
        return True
    try:
        return evaluate(attr.expr, make_resolver(owner, attr))
    except TaklerError:
        return False


def explain(owner: Node, attr: ExprAttr) -> list[str]:
    from takler.core.expression import explain as explain_expr

    return explain_expr(attr.expr, make_resolver(owner, attr))


def time_free(node: Node, now: dt.datetime) -> bool:
    """Time attributes of one node: clock kinds OR'ed, calendar kinds OR'ed, both AND'ed."""
    if not node.times:
        return True
    clock = [t for t in node.times if t.kind in _CLOCK_KINDS]
    calendar = [t for t in node.times if t.kind not in _CLOCK_KINDS]
    if clock and not any(t.is_free(now) for t in clock):
        return False
    return not calendar or any(t.is_free(now) for t in calendar)


def time_deadline(node: Node, now: dt.datetime) -> dt.datetime | None:
    """The earliest moment after ``now`` at which a time attribute of ``node`` may free it."""
    deadlines = [d for t in node.times if (d := t.next_deadline(now)) is not None]
    return min(deadlines) if deadlines else None


def lineage(node: Node) -> Iterator[Node]:
    yield node
    yield from node.ancestors()


def task_ready(task: Task, now: dt.datetime) -> bool:
    """Whether a queued task's dependencies all hold (limits are checked on submission)."""
    if task.status is not NodeStatus.queued:
        return False
    flow = task.flow
    if not flow.begun:
        return False
    for node in lineage(task):
        if node.suspended:
            return False
        if node.trigger is not None and not holds(node, node.trigger):
            return False
        if node.times and not time_free(node, now):
            return False
    return True


def complete_due(node: Node) -> bool:
    """Whether a queued node's complete expression now holds; a freed one
    holds (as in ecFlow: the operator said it need not be waited for)."""
    attr = node.complete_expr
    if attr is None or node.status is not NodeStatus.queued or node.is_suspended_in_tree():
        return False
    if not node.flow.begun:
        return False
    return holds(node, attr)
