"""Limits: finding a node's limits, taking and giving back tokens.

A task holds tokens of every limit named by an inlimit on itself or an
ancestor. With ``inlimit -n`` on a family the family is the holder, counted
once however many of its tasks run; with ``-s`` tokens are held only while
submitted. Tokens go back when the holder stops running.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from takler.core.attributes import InLimit, Limit
from takler.core.change import Change, ChangeKind
from takler.core.errors import AttributeNotFoundError
from takler.core.node import Family, Node, Task
from takler.core.status import RUNNING, NodeStatus

if TYPE_CHECKING:
    from takler.core.bunch import Bunch



def find_limit_owner(node: Node, inlimit: InLimit) -> Node | None:
    """The node that defines the limit ``inlimit`` names, or None."""
    if inlimit.path:
        bunch = node.bunch
        if bunch is None:
            return None
        from takler.core.bunch import resolve_path

        target = bunch.get_node(resolve_path(node, inlimit.path))
        return target if target is not None and inlimit.name in target.limits else None
    current: Node | None = node
    while current is not None:
        if inlimit.name in current.limits:
            return current
        current = current.parent
    return None


def claims(task: Task) -> Iterator[tuple[Node, InLimit, Limit | None, Node | None]]:
    """Each (claimant, inlimit, limit, owner) that applies to ``task``."""
    node: Node | None = task
    while node is not None:
        for inlimit in node.inlimits:
            owner = find_limit_owner(node, inlimit)
            limit = owner.limits[inlimit.name] if owner is not None else None
            yield node, inlimit, limit, owner
        node = node.parent


def _holder(task: Task, claimant: Node, inlimit: InLimit) -> str:
    return claimant.node_path if inlimit.node_only and claimant is not task else task.node_path


def blocking_limits(task: Task) -> list[tuple[Node, Limit, InLimit]]:
    """The limits without room for ``task``: (owner, limit, inlimit)."""
    out = []
    for claimant, inlimit, limit, owner in claims(task):
        if limit is None or owner is None:
            continue
        if not limit.has_room(_holder(task, claimant, inlimit), inlimit.tokens):
            out.append((owner, limit, inlimit))
    return out


def missing_limits(task: Task) -> list[str]:
    return [
        f"{claimant.node_path}: inlimit {inlimit.spec} names no limit"
        for claimant, inlimit, limit, _ in claims(task)
        if limit is None
    ]


def acquire(task: Task, changes: list[Change]) -> None:
    """Take the tokens ``task`` needs (call only after checking room).

    Raises:
        AttributeNotFoundError: an inlimit names a limit that does not exist.
    """
    missing = missing_limits(task)
    if missing:
        raise AttributeNotFoundError(missing[0])
    for claimant, inlimit, limit, owner in claims(task):
        assert limit is not None and owner is not None
        holder = _holder(task, claimant, inlimit)
        limit.waiting.pop(task.node_path, None)
        if holder in limit.holders:
            continue
        old = limit.value
        limit.holders[holder] = inlimit.tokens
        changes.append(Change(owner.node_path, ChangeKind.limit, limit.name, old, limit.value))


def _within(node: Node, root: Node | None) -> bool:
    return root is not None and (node is root or any(a is root for a in node.ancestors()))


def _family_busy(family: Node, leaving: Node | None = None) -> bool:
    return isinstance(family, Family) and any(
        t.status in RUNNING and not _within(t, leaving) for t in family.tasks()
    )


def release(
    bunch: Bunch,
    task: Task,
    changes: list[Change],
    *,
    submitted_only: bool,
    leaving: Node | None = None,
) -> None:
    """Give back the tokens ``task`` holds.

    With ``submitted_only`` only ``-s`` claims are released (the job went active).
    Tasks under ``leaving`` (a subtree being deleted) no longer keep a family busy.
    """
    for claimant, inlimit, limit, owner in claims(task):
        if limit is None or owner is None:
            continue
        if submitted_only and not inlimit.submission_only:
            continue
        holder = _holder(task, claimant, inlimit)
        if holder not in limit.holders:
            continue
        if holder != task.node_path and _family_busy(claimant, leaving):
            continue
        old = limit.value
        del limit.holders[holder]
        changes.append(Change(owner.node_path, ChangeKind.limit, limit.name, old, limit.value))


def release_all(
    bunch: Bunch, task: Task, changes: list[Change], *, leaving: Node | None = None
) -> None:
    release(bunch, task, changes, submitted_only=False, leaving=leaving)


def on_task_status(bunch: Bunch, task: Task, new: NodeStatus, changes: list[Change]) -> None:
    if new is NodeStatus.active:
        release(bunch, task, changes, submitted_only=True)
    elif new not in RUNNING:
        release(bunch, task, changes, submitted_only=False)
