"""Why a node is not running: every reason, in words."""

from __future__ import annotations

import datetime as dt

from takler.core.limits import blocking_limits, missing_limits
from takler.core.node import Node, Task
from takler.core.ops import tries_allowed
from takler.core.ready import explain, holds, lineage, time_deadline, time_free
from takler.core.status import NodeStatus


def _task_reasons(task: Task, now: dt.datetime) -> list[str]:
    out: list[str] = []
    status = task.status
    if status is NodeStatus.unknown:
        if task.flow.begun:
            out.append(f"{task.node_path} is unknown (added after begin): requeue it")
    elif status is not NodeStatus.queued:
        if status is NodeStatus.aborted:
            out.append(
                f"{task.node_path} is aborted ({task.reason or 'no reason'}) after try"
                f" {task.tryno} of {tries_allowed(task)}: requeue or run it"
            )
        else:
            out.append(f"{task.node_path} is {status.value}, not queued")
        return out
    for node in lineage(task):
        path = node.node_path
        if node.suspended:
            out.append(f"{path} is suspended: resume it")
        if node.trigger is not None and not holds(node, node.trigger):
            lines = explain(node, node.trigger) or [f"{node.trigger.text} does not hold"]
            out += [f"{path} trigger: {line}" for line in lines]
        if node.times and not time_free(node, now):
            when = time_deadline(node, now)
            specs = ", ".join(f"{t.kind} {t.to_text()}" for t in node.times)
            at = f" (next at {when:%Y-%m-%d %H:%M})" if when else ""
            out.append(f"{path} waits for time: {specs}{at}")
    for owner, limit, inlimit in blocking_limits(task):
        holders = ", ".join(sorted(limit.holders)) or "nobody"
        out.append(
            f"limit {owner.node_path}:{limit.name} is full ({limit.value}/{limit.maximum},"
            f" needs {inlimit.tokens}): held by {holders}"
        )
    out += missing_limits(task)
    return out


def why(node: Node, now: dt.datetime, server_state: str = "running") -> list[str]:
    """Every reason ``node`` (a task, or each queued task under a family) is held back.

    Returns an empty list when nothing holds it back.
    """
    out: list[str] = []
    flow = node.flow
    if not flow.begun:
        out.append(f"flow {flow.name} has not begun: use 'begin {flow.name}'")
    if server_state != "running":
        out.append(f"the server is {server_state}: nothing is submitted until 'restart'")
    if isinstance(node, Task):
        return out + _task_reasons(node, now)
    tasks = [t for t in node.tasks() if t.status in (NodeStatus.queued, NodeStatus.aborted)]
    if not tasks:
        out.append(f"{node.node_path} is {node.state.value}: no queued task under it")
    for task in tasks[:20]:
        out += _task_reasons(task, now)
    if len(tasks) > 20:
        out.append(f"... and {len(tasks) - 20} more queued tasks")
    return out
