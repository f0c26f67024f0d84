"""The event-driven scheduler.

It never scans the whole flow on a timer. Each committed batch of changes is
handed to :meth:`Scheduler.notice`, which turns it into candidate nodes using
the bunch's dependency index (and each limit's waiting list); the scheduler
task then wakes, looks only at those candidates and submits what is free. Time
attributes and late limits put deadlines on a heap; the task sleeps until the
next one or the next change, whichever comes first.

Some state changes without a Change naming it: evaluating a time attribute
latches ``free``, a requeue re-arms it, and a suspended task's status changes
behind its display state (still ``suspended``). The store writes only the
nodes that changes name, so :func:`note_latches`, :func:`note_time_resets` and
:func:`note_hidden_statuses` journal those for a restart to restore them.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from takler.core import ops
from takler.core.bunch import Bunch
from takler.core.change import Change, ChangeKind
from takler.core.errors import TaklerError
from takler.core.limits import blocking_limits, missing_limits
from takler.core.node import Family, Node, Task
from takler.core.ready import complete_due, lineage, task_ready, time_deadline, time_free
from takler.core.status import QUIET, RUNNING, NodeStatus

_QUEUED = NodeStatus.queued.value
_RUNNING = frozenset(s.value for s in RUNNING)
#: changes to what expressions read, besides states and limits
_READ_BY_EXPRESSIONS = frozenset(
    {ChangeKind.event, ChangeKind.meter, ChangeKind.repeat, ChangeKind.variable,
     ChangeKind.attribute}
)  # fmt: skip


def unlatched_times(node: Node) -> list[tuple[Node, Any]]:
    """The time attributes of ``node`` and its ancestors that are not free yet."""
    return [(n, t) for n in lineage(node) for t in n.times if not t.free]


def note_latches(bunch: Bunch, unlatched: list[tuple[Node, Any]]) -> None:
    """Journal the attributes of ``unlatched`` that evaluation has since latched free."""
    paths = dict.fromkeys(n.node_path for n, t in unlatched if t.free)
    if paths:
        bunch._record([Change(path, ChangeKind.time, "free", False, True) for path in paths])


def hidden_statuses(root: Node) -> dict[Task, NodeStatus]:
    """The status of each suspended task at or below ``root``."""
    return {t: t.status for t in root.tasks() if t.suspended}


def note_hidden_statuses(before: dict[Task, NodeStatus]) -> None:
    """Journal the tasks of ``before`` whose status changed while suspended, as
    a status change of display state ``suspended`` to ``suspended``."""
    for task, status in before.items():
        if task.status is not status and task.bunch is not None:
            change = Change(task.node_path, ChangeKind.status, None, "suspended", "suspended")
            task.bunch._record([change])


def note_time_resets(root: Node) -> None:
    """Journal the time attributes a requeue of ``root`` re-armed."""
    bunch = root.bunch
    if bunch is not None:
        changes = [Change(n.node_path, ChangeKind.time, "reset") for n in root.walk() if n.times]
        bunch._record(changes)


#: flags whose setting may let a node run or complete
_FREED = frozenset({"trigger_freed", "time_freed", "complete_freed"})


class Scheduler:
    """Decides what to submit, looking only at what changes can affect.

    Args:
        bunch: the model.
        clock: the flow clock (``now``), derived from Trio's clock by the server.
        submit: starts a job for a task whose submission was just committed.
        commit: makes the journal durable and tells everyone (the server's commit).
        may_submit: False while the server is shut down or halted.
    """

    def __init__(
        self,
        bunch: Bunch,
        clock: Callable[[], dt.datetime],
        submit: Callable[[Task], None],
        commit: Callable[[], Awaitable[None]],
        may_submit: Callable[[], bool],
        new_password: Callable[[], str],
    ) -> None:
        self.bunch = bunch
        self.clock = clock
        self._submit = submit
        self._commit = commit
        self._may_submit = may_submit
        self._new_password = new_password
        self._candidates: dict[Node, None] = {}
        self._limits: dict[tuple[str, str], None] = {}
        self._deadlines: list[tuple[dt.datetime, int, str, str]] = []
        self._deadline_of: dict[tuple[str, str], dt.datetime] = {}
        self._seq = itertools.count()
        self._poke = trio.Event()
        self._held: list[Task] = []
        #: counters for benchmarks and `ping`
        self.steps = 0
        self.submitted = 0
        self.considered = 0

    # ---------------------------------------------------------------- input

    def notice(self, changes: list[Change]) -> None:
        """Turn committed changes into candidates; wake the scheduler if any."""
        bunch = self.bunch
        add = self._candidates.setdefault
        for change in changes:
            kind = change.kind
            if kind is ChangeKind.status:
                if change.new == _QUEUED:
                    # Only a task turning queued is new work; a family turns
                    # queued whenever its last running child finishes.
                    node = bunch.get_node(change.path)
                    if isinstance(node, Task):
                        add(node)
                elif change.new in _RUNNING:
                    self._watch_late(change.path)
                for node in bunch.dependents(change):
                    add(node)
            elif kind in _READ_BY_EXPRESSIONS:
                for node in bunch.dependents(change):
                    add(node)
            elif kind is ChangeKind.limit:
                for node in bunch.dependents(change):
                    add(node)
                self._limits[(change.path, change.name or "")] = None
            elif kind is ChangeKind.node_added:
                # A node added unknown or complete (every node of a flow just
                # loaded) has nothing to submit or complete below it.
                node = bunch.get_node(change.path)
                if node is not None and node.status not in QUIET:
                    add(node)
            elif (
                (kind is ChangeKind.suspended and change.new is False)
                or kind in (ChangeKind.begun, ChangeKind.trigger)
                or (kind is ChangeKind.flag and change.name in _FREED)
            ):
                node = bunch.get_node(change.path)
                if node is not None:
                    add(node)
        if self._candidates or self._limits:
            self._poke.set()

    def rescan(self) -> None:
        """Consider every flow again (after restart of the server or a restore)."""
        for flow in self.bunch.flows.values():
            self._candidates.setdefault(flow)
            for task in flow.live_tasks():
                if task.status in RUNNING:
                    self._watch_late(task.node_path)
        self._poke.set()

    def poke(self) -> None:
        self._poke.set()

    # ---------------------------------------------------------------- deadlines

    def _push_deadline(self, when: dt.datetime, path: str, what: str) -> None:
        key = (path, what)
        if self._deadline_of.get(key) == when:
            return
        self._deadline_of[key] = when
        heapq.heappush(self._deadlines, (when, next(self._seq), path, what))

    def _watch_late(self, path: str) -> None:
        task = self.bunch.get_node(path)
        if isinstance(task, Task):
            when = ops.late_deadline(task, self.clock())
            if when is not None:
                self._push_deadline(when, path, "late")

    def next_deadline(self) -> dt.datetime | None:
        return self._deadlines[0][0] if self._deadlines else None

    def _pop_due(self, now: dt.datetime) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            when, _, path, what = heapq.heappop(heap)
            if self._deadline_of.get((path, what)) != when:
                continue
            del self._deadline_of[(path, what)]
            node = self.bunch.get_node(path)
            if node is None:
                continue
            if what == "late":
                if isinstance(node, Task):
                    ops.check_late(node, now)
                    self._watch_late(path)
            else:
                self._candidates.setdefault(node)

    # ---------------------------------------------------------------- the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: wait for a change or a deadline, then step."""
        task_status.started()
        while True:
            when = self.next_deadline()
            deadline = math.inf
            if when is not None:
                delay = (when - self.clock()).total_seconds()
                deadline = trio.current_time() + max(0.0, delay)
            with trio.move_on_at(deadline):
                await self._poke.wait()
            self._poke = trio.Event()
            await self.step()

    async def step(self) -> None:
        """Evaluate the candidates once, submit what is free, commit."""
        self.steps += 1
        now = self.clock()
        self._pop_due(now)
        if not self._may_submit():
            self._candidates.clear()
            self._limits.clear()
            return
        candidates, self._candidates = self._candidates, {}
        limits, self._limits = self._limits, {}
        chosen: list[Task] = []
        for node in candidates:
            if not self.bunch.is_attached(node):
                continue
            if node.complete_expr is not None and complete_due(node):
                ops.set_complete_by_expression(node, now)
                continue
            if isinstance(node, Family):
                for task in node.live_tasks():
                    if task.status is NodeStatus.queued:
                        self._consider(task, now, chosen)
            elif isinstance(node, Task):
                self._consider(node, now, chosen)
        for owner_path, name in limits:
            self._drain_limit(owner_path, name, now, chosen)
        self._held += chosen
        try:
            await self._commit()
        except TaklerError:
            # Not durable: the jobs start once a later commit writes their
            # submissions (the server is read-only until then).
            return
        chosen, self._held = self._held, []
        for task in chosen:
            if task.status is NodeStatus.submitted and task.job is None:
                self._submit(task)

    def _consider(self, task: Task, now: dt.datetime, chosen: list[Task]) -> None:
        self.considered += 1
        if task.status is not NodeStatus.queued:
            return
        if task.complete_expr is not None and complete_due(task):
            ops.set_complete_by_expression(task, now)
            return
        unlatched = unlatched_times(task)
        if not task_ready(task, now):
            for node in lineage(task):
                if node.times and not time_free(node, now):
                    when = time_deadline(node, now)
                    if when is not None:
                        self._push_deadline(when, node.node_path, "time")
            if unlatched:
                note_latches(self.bunch, unlatched)
            return
        if unlatched:
            note_latches(self.bunch, unlatched)
        blocked = blocking_limits(task)
        if blocked:
            for _, limit, _ in blocked:
                limit.waiting[task.node_path] = None
            return
        if missing_limits(task):
            return
        ops.start_submission(task, self._new_password(), now)
        self.submitted += 1
        chosen.append(task)

    def _drain_limit(self, owner_path: str, name: str, now: dt.datetime, chosen: list[Task]) -> None:
        owner = self.bunch.get_node(owner_path)
        limit = owner.limits.get(name) if owner is not None else None
        if limit is None:
            return
        # Oldest first, and only while there is room: a release looks at a
        # few waiting tasks, not all of them. A task that goes back to the
        # queue (held by another limit) is not looked at twice.
        budget = len(limit.waiting)
        while budget and limit.waiting and limit.value < limit.maximum:
            budget -= 1
            path = next(iter(limit.waiting))
            del limit.waiting[path]
            task = self.bunch.get_node(path)
            if isinstance(task, Task):
                self._consider(task, now, chosen)
