"""Dump: nodes, bunches, a node's own state and changes to plain JSON-able data;
the state of a task never run."""

from __future__ import annotations

import functools
from typing import Any

from takler.codec.base import SCHEMA, _dump_attr_state, _iso, _jsonable
from takler.codec.text import dumps
from takler.core.bunch import Bunch, gc_paused
from takler.core.change import Change
from takler.core.expression import format_expression
from takler.core.node import Family, Flow, Node, Task
from takler.core.status import NodeStatus

# ---------------------------------------------------------------- dump


# Expression trees are immutable and shared between nodes with the same text.
_expr_text = functools.lru_cache(maxsize=1 << 16)(format_expression)


def _dump(node: Node, secrets: bool, state: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": node.kind, "name": node.name}
    is_task = isinstance(node, Task)
    if state:
        suspended = node.suspended
        status = node._status if is_task else node.status  # type: ignore[attr-defined]
        # ``_value_``, a plain attribute: ``.value`` is a slow descriptor in a hot loop.
        d["state"] = "suspended" if suspended else status._value_
        d["suspended"] = suspended
    if node.defstatus is not None:
        d["defstatus"] = node.defstatus.value
    if node.parameters:
        d["parameters"] = dict(node.parameters)
    if node.events:
        d["events"] = [_dump_event(e, state) for e in node.events.values()]
    if node.meters:
        d["meters"] = [_dump_meter(m, state) for m in node.meters.values()]
    if node.labels:
        d["labels"] = [
            {"name": la.name, "default": la.default, "value": la.value}
            if state
            else {"name": la.name, "default": la.default}
            for la in node.labels.values()
        ]
    if node.limits:
        d["limits"] = [
            {"name": li.name, "maximum": li.maximum, "holders": dict(li.holders)}
            if state and li.holders
            else {"name": li.name, "maximum": li.maximum}
            for li in node.limits.values()
        ]
    if node.inlimits:
        d["inlimits"] = [
            {"name": i.name, "path": i.path, "tokens": i.tokens, "node_only": i.node_only,
             "submission_only": i.submission_only}
            for i in node.inlimits
        ]  # fmt: skip
    trigger = node.trigger
    if trigger is not None:
        text = _expr_text(trigger.expr)
        d["trigger"] = {"text": text, "freed": trigger.freed} if state else {"text": text}
    if node.complete_expr is not None:
        text = _expr_text(node.complete_expr.expr)
        d["complete"] = (
            {"text": text, "freed": node.complete_expr.freed} if state else {"text": text}
        )
    if node.repeat is not None:
        repeat = node.repeat
        d["repeat"] = {"text": repeat.to_text()}
        if state:
            _dump_attr_state(repeat, d["repeat"])["value"] = repeat.value
    if node.times:
        d["times"] = [
            _dump_attr_state(t, {"kind": t.kind, "text": t.to_text()})
            if state
            else {"kind": t.kind, "text": t.to_text()}
            for t in node.times
        ]
    if node.late is not None:
        d["late"] = {"text": node.late.to_text()}
    if node.autocancel is not None:
        d["autocancel"] = node.autocancel
    if state:
        if node.state_since is not None:
            d["state_since"] = node.state_since.isoformat()
        if node.flags:
            d["flags"] = sorted(node.flags)
    if is_task:
        if state:
            d["status"] = status._value_
            d["tryno"] = node.tryno  # type: ignore[attr-defined]
            _task_extras(node, d, secrets)  # type: ignore[arg-type]
        return d
    assert isinstance(node, Family)
    if isinstance(node, Flow):
        if state:
            d["begun"] = node.begun
            if node.begun_at is not None:
                d["begun_at"] = node.begun_at.isoformat()
        if node.clock is not None:
            d["clock"] = node.clock
    if node.children:
        d["children"] = [_dump(c, secrets, state) for c in node.children]
    return d


def _dump_event(e: Any, state: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": e.name}
    if e.number is not None:
        d["number"] = e.number
    d["initial"] = e.initial
    if state:
        d["value"] = e.value
    return d


def _dump_meter(m: Any, state: bool) -> dict[str, Any]:
    d = {"name": m.name, "minimum": m.minimum, "maximum": m.maximum}
    if m.threshold is not None:
        d["threshold"] = m.threshold
    if state:
        d["value"] = m.value
    return d


def _task_extras(task: Task, d: dict[str, Any], secrets: bool) -> None:
    if task.job is None and task.rid is None and task.reason is None:
        # A task that never ran (most of a big flow) has none of the fields below.
        if task.submitted_at is None and task.active_at is None and task.password is None:
            return
    if secrets and task.password is not None:
        d["password"] = task.password
    if task.rid is not None:
        d["rid"] = task.rid
    if task.job is not None:
        d["job"] = dict(task.job)
    if task.reason is not None:
        d["reason"] = task.reason
    if task.submitted_at is not None:
        d["submitted_at"] = task.submitted_at.isoformat()
    if task.active_at is not None:
        d["active_at"] = task.active_at.isoformat()


def dump_node(node: Node, *, secrets: bool = False, state: bool = True) -> dict[str, Any]:
    """The node and its subtree as data; ``state=False`` gives a pure definition."""
    with gc_paused():
        return _dump(node, secrets, state)


def dump_bunch(bunch: Bunch, *, secrets: bool = False, state: bool = True) -> dict[str, Any]:
    """The whole bunch as data: ``{"schema", "parameters", "now", "flows"}``."""
    return {
        "schema": SCHEMA,
        "parameters": dict(bunch.parameters),
        "now": _iso(bunch.now),
        "flows": [dump_node(f, secrets=secrets, state=state) for f in bunch.flows.values()],
    }


def dump_node_state(node: Node, *, secrets: bool = True) -> dict[str, Any]:
    """The node's own run-time state (no children), as the store keeps it."""
    s: dict[str, Any] = {}
    if node.suspended:
        s["suspended"] = True
    if node.state_since is not None:
        s["state_since"] = node.state_since.isoformat()
    if node.flags:
        s["flags"] = sorted(node.flags)
    if node.events:
        s["events"] = {e.name: e.value for e in node.events.values()}
    if node.meters:
        s["meters"] = {m.name: m.value for m in node.meters.values()}
    if node.labels:
        s["labels"] = {la.name: la.value for la in node.labels.values()}
    if node.limits:
        s["limits"] = {
            li.name: {"maximum": li.maximum, "holders": dict(li.holders)}
            if li.holders
            else {"maximum": li.maximum}
            for li in node.limits.values()
        }
    if node.trigger is not None and node.trigger.freed:
        s["trigger_freed"] = True
    if node.complete_expr is not None and node.complete_expr.freed:
        s["complete_freed"] = True
    if node.repeat is not None:
        s["repeat"] = _dump_attr_state(node.repeat, {})
    if node.times:
        s["times"] = [_dump_attr_state(t, {}) for t in node.times]
    if isinstance(node, Task):
        s["status"] = node._status.value
        s["tryno"] = node.tryno
        _task_extras(node, s, secrets)
    elif isinstance(node, Flow):
        s["begun"] = node.begun
        if node.begun_at is not None:
            s["begun_at"] = node.begun_at.isoformat()
    return s


def is_fresh_task(node: Node) -> bool:
    """Whether ``dump_node_state(node)`` equals FRESH_TASK_STATE: a task as
    built from its definition, never run (or put back in exactly that state).

    It reads exactly the fields dump_node_state reads, without building the
    dict (most of a big flow is such tasks, and a whole-flow save asks of
    each). A state field added to dump_node_state must be added here; the
    test suite checks the two agree for each field of a Task.
    Running tasks fail on the first test.
    """
    if not isinstance(node, Task) or node._status is not NodeStatus.unknown or node.tryno != 0:
        return False
    trigger, complete = node.trigger, node.complete_expr
    return not (
        node.suspended
        or node.state_since is not None
        or node.flags
        or node.events
        or node.meters
        or node.labels
        or node.limits
        or (trigger is not None and trigger.freed)
        or (complete is not None and complete.freed)
        or node.repeat is not None
        or node.times
        or node.password is not None
        or node.rid is not None
        or node.job is not None
        or node.reason is not None
        or node.submitted_at is not None
        or node.active_at is not None
    )


def dump_change(change: Change) -> dict[str, Any]:
    """A change as data: ``{"path", "kind", "name", "old", "new"}``."""
    return {
        "path": change.path,
        "kind": change.kind.value,
        "name": change.name,
        "old": _jsonable(change.old),
        "new": _jsonable(change.new),
    }


#: The stored state of a task never run (see :func:`dump_node_state`), and its
#: text: the state a task is built in, which a store need not keep.
FRESH_TASK_STATE: dict[str, Any] = dump_node_state(Task("t"))
FRESH_TASK_STATE_TEXT = dumps(FRESH_TASK_STATE)
