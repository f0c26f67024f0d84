"""Operations on the tree: begin, requeue, suspend, force, child commands...

Every function returns the :class:`Change` records it made (also appended to
the bunch's journal when the node is attached). ``now`` is the flow clock;
when omitted, the bunch's :attr:`~takler.core.bunch.Bunch.now` is used.
Operations either apply whole or raise before changing anything.
"""

from __future__ import annotations

import datetime as dt
import hmac

from takler.core.change import Change, ChangeKind
from takler.core.errors import StateError, ZombieError
from takler.core.limits import acquire
from takler.core.node import Family, Flow, Node, Task
from takler.core.status import FORCIBLE, RUNNING, NodeStatus

DEFAULT_TRIES = 2


def _now(node: Node, now: dt.datetime | None) -> dt.datetime:
    if now is not None:
        return now
    bunch = node.bunch
    return bunch.now if bunch is not None else dt.datetime(1970, 1, 1)


def _done(node: Node, changes: list[Change], now: dt.datetime) -> list[Change]:
    """Settle what completions set off (repeats, time series), then journal."""
    _settle(node, changes, now)
    return node._commit(changes)


def tries_allowed(task: Task) -> int:
    for name in ("TAKLER_TRIES", "ECF_TRIES"):
        value = task.find_parameter(name)
        if value is not None:
            try:
                return max(1, int(value))
            except (TypeError, ValueError):
                break
    return DEFAULT_TRIES


def _default_status(task: Task) -> NodeStatus:
    for node in (task, *task.ancestors()):
        # ``defstatus suspended`` suspends the node itself (see _requeue_tree).
        if node.defstatus is not None and node.defstatus is not NodeStatus.suspended:
            return node.defstatus
    return NodeStatus.queued


# ---------------------------------------------------------------- requeue


def _reset_attrs(node: Node, changes: list[Change], now: dt.datetime, base: dt.datetime) -> None:
    path = node.node_path
    for event in node.events.values():
        if event.value != event.initial:
            changes.append(Change(path, ChangeKind.event, event.name, event.value, event.initial))
        event.reset()
    for meter in node.meters.values():
        if meter.value != meter.minimum:
            changes.append(Change(path, ChangeKind.meter, meter.name, meter.value, meter.minimum))
        meter.reset()
    for label in node.labels.values():
        if label.value != label.default:
            changes.append(Change(path, ChangeKind.label, label.name, label.value, label.default))
        label.reset()
    for which, attr in (("trigger", node.trigger), ("complete", node.complete_expr)):
        if attr is not None and attr.freed:
            attr.freed = False
            changes.append(Change(path, ChangeKind.flag, f"{which}_freed", True, False))
    for t in node.times:
        t.reset(now, base)
    if node.flags:
        for flag in sorted(node.flags):
            changes.append(Change(path, ChangeKind.flag, flag, True, False))
        node.flags = frozenset()


def _reset_repeat(node: Node, changes: list[Change]) -> None:
    repeat = node.repeat
    if repeat is not None and (repeat.index != 0 or getattr(repeat, "expired", False)):
        old = repeat.index
        repeat.reset()
        changes.append(Change(node.node_path, ChangeKind.repeat, repeat.name, old, repeat.index))


def _requeue_tree(
    root: Node,
    changes: list[Change],
    now: dt.datetime,
    *,
    reset_root_repeat: bool,
    reset_repeats: bool,
    status: NodeStatus | None = None,
) -> None:
    base = now
    for node in root.walk():
        _reset_attrs(node, changes, now, base)
        if node.defstatus is NodeStatus.suspended:
            _set_suspended(node, True, changes)
        if reset_root_repeat if node is root else reset_repeats:
            _reset_repeat(node, changes)
        if isinstance(node, Task):
            if node.tryno or node.password:
                changes.append(Change(node.node_path, ChangeKind.tries, None, node.tryno, 0))
            node.tryno = 0
            node.password = None
            node.rid = None
            node.job = None
            node.reason = None
            node.submitted_at = node.active_at = None
            node._set_status(status or _default_status(node), changes)


def _check_begun(node: Node) -> None:
    flow = node.flow
    if not flow.begun:
        raise StateError(f"flow {flow.name} has not begun: use 'begin {flow.name}' first")


def _check_nothing_running(node: Node, what: str) -> None:
    running = [t.node_path for t in node.tasks() if t.status in RUNNING]
    if running:
        more = f" and {len(running) - 1} more" if len(running) > 1 else ""
        raise StateError(
            f"cannot {what} {node.node_path}: {running[0]}{more} is submitted or active"
            " (kill it or use force)"
        )


def begin(flow: Flow, now: dt.datetime | None = None, *, force: bool = False) -> list[Change]:
    """Start a flow: requeue everything (repeats included) and let it run.

    Raises:
        StateError: already begun (unless ``force``) or jobs still running.
    """
    if not isinstance(flow, Flow):
        raise StateError(f"{flow.node_path} is not a flow: only flows are begun")
    if flow.begun and not force:
        raise StateError(f"flow {flow.name} has already begun (use requeue to start over)")
    _check_nothing_running(flow, "begin")
    now = _now(flow, now)
    changes: list[Change] = []
    flow.begun = True
    flow.begun_at = now
    changes.append(Change(flow.node_path, ChangeKind.begun, None, False, True))
    _requeue_tree(flow, changes, now, reset_root_repeat=True, reset_repeats=True)
    return _done(flow, changes, now)


def requeue(
    node: Node,
    now: dt.datetime | None = None,
    *,
    reset_repeats: bool = False,
    force: bool = False,
) -> list[Change]:
    """Put a subtree back to queued (or its defstatus), resetting its attributes.

    Events, meters, labels, time latches, tries and flags reset; repeats only
    with ``reset_repeats``.

    Raises:
        StateError: the flow has not begun, or jobs run in the subtree (without ``force``).
    """
    _check_begun(node)
    if not force:
        _check_nothing_running(node, "requeue")
    now = _now(node, now)
    changes: list[Change] = []
    _requeue_tree(node, changes, now, reset_root_repeat=reset_repeats, reset_repeats=reset_repeats)
    return _done(node, changes, now)


def _set_suspended(node: Node, value: bool, changes: list[Change]) -> None:
    if node.suspended is value:
        return
    old = node.state
    node.suspended = value
    changes.append(Change(node.node_path, ChangeKind.suspended, None, not value, value))
    node._emit_state(old, changes)


def suspend(node: Node) -> list[Change]:
    """Stop a subtree from submitting anything until resumed."""
    changes: list[Change] = []
    _set_suspended(node, True, changes)
    return node._commit(changes)


def resume(node: Node, now: dt.datetime | None = None) -> list[Change]:
    """Let a subtree run again.

    What completed while suspended settles now: its repeat advances, its time
    series requeues.
    """
    changes: list[Change] = []
    _set_suspended(node, False, changes)
    return _done(node, changes, _now(node, now))


def force(
    node: Node, state: NodeStatus | str, now: dt.datetime | None = None, *, recursive: bool = False
) -> list[Change]:
    """Set a task's state, or every task's under a family.

    A family's state derives from its tasks, so forcing a family always
    applies to its tasks; ``recursive`` is accepted for ecFlow users.

    Raises:
        InvalidValueError: not a state. StateError: ``suspended`` (use suspend).
    """
    if isinstance(state, str):
        state = NodeStatus.parse(state)
    if state not in FORCIBLE:
        raise StateError(f"cannot force {state.value}: use suspend/resume")
    now = _now(node, now)
    changes: list[Change] = []
    for task in node.tasks():
        if state is NodeStatus.queued:
            _requeue_tree(task, changes, now, reset_root_repeat=False, reset_repeats=False)
        else:
            task._set_status(state, changes)
    return _done(node, changes, now)


def free_dependencies(
    node: Node, *, trigger: bool = True, time: bool = False, complete: bool = False
) -> list[Change]:
    """Let a node go past its trigger and/or time dependencies until requeued."""
    changes: list[Change] = []
    if trigger and node.trigger is not None and not node.trigger.freed:
        node.trigger.freed = True
        changes.append(Change(node.node_path, ChangeKind.flag, "trigger_freed", False, True))
    if complete and node.complete_expr is not None and not node.complete_expr.freed:
        node.complete_expr.freed = True
        changes.append(Change(node.node_path, ChangeKind.flag, "complete_freed", False, True))
    if time:
        for t in node.times:
            t.free_now()
        if node.times:
            changes.append(Change(node.node_path, ChangeKind.flag, "time_freed", False, True))
    return node._commit(changes)


def set_complete_by_expression(node: Node, now: dt.datetime | None = None) -> list[Change]:
    """A node's complete expression held: it (and every task under it) is complete."""
    now = _now(node, now)
    changes: list[Change] = []
    for task in node.tasks():
        if task.status not in RUNNING:
            task._set_status(NodeStatus.complete, changes)
    return _done(node, changes, now)


# ---------------------------------------------------------------- submission and jobs


def check_runnable(task: Task, *, force: bool = False) -> None:
    """Raise StateError when ``run`` must refuse (a job of the task already runs)."""
    if not isinstance(task, Task):
        raise StateError(f"{task.node_path} is not a task: only tasks are run")
    if task.status in RUNNING and not force:
        raise StateError(
            f"{task.node_path} is {task.status.value}: use --force to run it again"
        )


def start_submission(task: Task, password: str, now: dt.datetime | None = None) -> list[Change]:
    """Take limit tokens, bump the try number, new password: the task is submitted."""
    now = _now(task, now)
    changes: list[Change] = []
    acquire(task, changes)
    old = task.tryno
    task.tryno += 1
    task.password = password
    task.rid = None
    task.job = None
    task.reason = None
    task.submitted_at = now
    task.active_at = None
    changes.append(Change(task.node_path, ChangeKind.tries, None, old, task.tryno))
    task._set_status(NodeStatus.submitted, changes)
    return task._commit(changes)


def record_job(task: Task, rid: str, job: dict[str, object]) -> list[Change]:
    """The runner accepted the job: remember its id and handle."""
    task.rid = rid
    task.job = dict(job)
    return task._commit(
        [Change(task.node_path, ChangeKind.submission, None, None, {"rid": rid, **job})]
    )


def check_child(task: Task, password: str | None, tryno: int | None) -> None:
    """Refuse a child command that does not come from the current job.

    Raises:
        ZombieError: wrong password, stale try, or the task is not running.
    """
    if not isinstance(task, Task):
        raise ZombieError(f"{task.node_path} is not a task")
    if (
        task.password is None
        or not isinstance(password, str)
        or not hmac.compare_digest(password.encode(), task.password.encode())
    ):
        raise ZombieError(f"{task.node_path}: password does not match the current job")
    if tryno != task.tryno:
        raise ZombieError(
            f"{task.node_path}: try {tryno} is not the current try {task.tryno}"
        )
    if task.status not in RUNNING:
        raise ZombieError(f"{task.node_path} is {task.status.value}, not running")


def init(task: Task, now: dt.datetime | None = None) -> list[Change]:
    now = _now(task, now)
    if task.status not in RUNNING:
        raise StateError(f"{task.node_path} is {task.status.value}: init needs a submitted task")
    changes: list[Change] = []
    if task.status is NodeStatus.submitted:
        task.active_at = now
        task._set_status(NodeStatus.active, changes)
    return task._commit(changes)


def complete(task: Task, now: dt.datetime | None = None) -> list[Change]:
    now = _now(task, now)
    if task.status not in RUNNING:
        raise StateError(f"{task.node_path} is {task.status.value}: only a running task completes")
    changes: list[Change] = []
    task._set_status(NodeStatus.complete, changes)
    return _done(task, changes, now)


def abort(task: Task, reason: str = "", now: dt.datetime | None = None) -> list[Change]:
    """The job failed: aborted, then queued again while tries remain."""
    now = _now(task, now)
    changes: list[Change] = []
    task.reason = reason or "aborted"
    task._set_status(NodeStatus.aborted, changes)
    if task.tryno < tries_allowed(task) and task.tryno > 0:
        task.password = None
        task._set_status(NodeStatus.queued, changes)
    return _done(task, changes, now)


# ---------------------------------------------------------------- settling


def _repeat_or_series(node: Node) -> bool:
    return node.repeat is not None or any(t.kind in ("time", "today", "cron") for t in node.times)


def _settle(root: Node, changes: list[Change], now: dt.datetime) -> None:
    """Advance repeats and time series of nodes that just completed.

    Looks at the status changes in order, including those it makes itself.
    """
    bunch = root.bunch
    if bunch is None:
        return
    i = 0
    while i < len(changes):
        change = changes[i]
        i += 1
        if change.kind is not ChangeKind.status or change.new != NodeStatus.complete.value:
            continue
        node = bunch.get_node(change.path)
        if node is None or not _repeat_or_series(node) or node.state is not NodeStatus.complete:
            continue
        if not node.flow.begun:
            continue
        repeat = node.repeat
        if repeat is not None:
            old = repeat.index
            if repeat.advance():
                changes.append(Change(node.node_path, ChangeKind.repeat, repeat.name, old, repeat.index))
                _requeue_tree(node, changes, now, reset_root_repeat=False, reset_repeats=True)
            continue
        slots = [
            (slot, t)
            for t in node.times
            if t.kind in ("time", "today", "cron") and (slot := t.next_slot_after(now)) is not None
        ]
        if slots:
            slot, attr = min(slots, key=lambda s: s[0])
            _requeue_tree(node, changes, now, reset_root_repeat=False, reset_repeats=False)
            attr.arm(slot)


def delete(node: Node, *, force: bool = False) -> list[Change]:
    """Remove a node (or a whole flow) from its bunch.

    Raises:
        StateError: jobs still run under it (without ``force``).
    """
    if not force:
        _check_nothing_running(node, "delete")
    if isinstance(node, Flow):
        bunch = node.bunch
        if bunch is None:
            return []
        return bunch.delete_flow(node.name)
    parent = node.parent
    assert isinstance(parent, Family)
    return parent.remove_child(node)


def check_late(task: Task, now: dt.datetime) -> list[Change]:
    """Raise the late flag when a late attribute (own or inherited) is exceeded."""
    late = next((n.late for n in (task, *task.ancestors()) if n.late is not None), None)
    if late is None or "late" in task.flags:
        return []
    if late.is_late(now, task.status.value, task.submitted_at, task.active_at):
        task.flags = task.flags | {"late"}
        return task._commit([Change(task.node_path, ChangeKind.flag, "late", False, True)])
    return []


def late_deadline(task: Task, now: dt.datetime) -> dt.datetime | None:
    late = next((n.late for n in (task, *task.ancestors()) if n.late is not None), None)
    if late is None or "late" in task.flags:
        return None
    return late.next_deadline(now, task.status.value, task.submitted_at, task.active_at)
