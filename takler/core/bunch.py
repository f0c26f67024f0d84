"""The Bunch: the server's root, holding flows, server variables and indexes.

Besides the tree, the bunch keeps what makes one change cheap to act on:

* a path index (path -> node);
* a dependency index from what an expression references (a node's state, or
  ``path:name`` for events, meters, repeats, limits and variables) to the
  nodes whose trigger or complete expression mentions it;
* from each inlimit's limit to the nodes that claim it.

Every change made to attached nodes lands in :attr:`Bunch.journal`, which the
server drains after each command or scheduler step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
from collections.abc import Iterator
from typing import Any

import attrs

from takler.core.attributes import Limit, check_name
from takler.core.change import Change, ChangeKind
from takler.core.errors import DuplicateNameError, InvalidValueError, NodeNotFoundError
from takler.core.expression import AttrRef, references_of
from takler.core.limits import find_limit_owner
from takler.core.node import Family, Flow, Node, ParamValue, Task, _param_value
from takler.core.status import NodeStatus

_EPOCH = dt.datetime(1970, 1, 1)


@contextlib.contextmanager
def gc_paused(long_lived: bool = False) -> Iterator[None]:
    """Pause the cyclic GC: building (and indexing) a big tree only allocates,
    and each collection would rescan everything built so far.

    With ``long_lived`` (what was built stays, as a loaded flow), every
    tracked object then moves to the oldest generation (freeze + unfreeze,
    no scan); otherwise the first young collection would scan all of it, and
    the middle one again. Young garbage moved with it waits for the next full
    collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if long_lived:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


#: a node's path (its state), or (path, name) for an event, meter, repeat, limit or variable
DepKey = str | tuple[str, str]
#: one node, or a set when several share a key: most keys have one user, and a
#: set per key would cost more than the rest of the index
_Users = Node | set[Node]


def _link(table: dict[Any, _Users], key: Any, node: Node) -> None:
    found = table.get(key)
    if found is None:
        table[key] = node
    elif isinstance(found, set):
        found.add(node)
    elif found is not node:
        table[key] = {found, node}


def _unlink(table: dict[Any, _Users], key: Any, node: Node) -> None:
    found = table.get(key)
    if found is node:
        del table[key]
    elif isinstance(found, set):
        found.discard(node)
        if len(found) == 1:
            table[key] = found.pop()


def _users(table: dict[Any, _Users], key: Any) -> set[Node]:
    found = table.get(key)
    if found is None:
        return set()
    return set(found) if isinstance(found, set) else {found}


def resolve_path(owner: Node, path: str) -> str:
    """The absolute path ``path`` names when written in ``owner``'s expression.

    Relative paths count from the owner's parent, as in ecFlow: for
    ``/s/f/t2``, ``t1`` and ``./t1`` are ``/s/f/t1`` and ``../g`` is ``/s/g``.
    """
    base = owner.parent.node_path if owner.parent is not None and path[:1] != "/" else ""
    return _resolve(base, path)


def _resolve(base: str, path: str) -> str:
    """``path`` made absolute from ``base``, the path of the referring node's parent."""
    if "/" not in path and path not in (".", "..", ""):
        # A sibling's name (``t1``), the common case: ``base`` is already normal.
        return f"{base}/{path}"
    if path.startswith("/"):
        parts = [p for p in path.split("/") if p]
    else:
        parts = [p for p in base.split("/") if p]
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
    return "/" + "/".join(parts)


@attrs.define(eq=False)
class Bunch:
    """The root of everything a server holds."""

    flows: dict[str, Flow] = attrs.Factory(dict)
    parameters: dict[str, ParamValue] = attrs.Factory(dict)
    #: the flow clock as the server last set it (the model never reads a clock)
    now: dt.datetime = _EPOCH
    journal: list[Change] = attrs.field(factory=list, repr=False)
    _paths: dict[str, Node] = attrs.field(factory=dict, repr=False, alias="_paths")
    _tasks: int = attrs.field(default=0, repr=False, alias="_tasks")
    _deps: dict[DepKey, _Users] = attrs.field(factory=dict, repr=False, alias="_deps")
    _var_deps: dict[str, _Users] = attrs.field(factory=dict, repr=False, alias="_var_deps")
    _limit_users: dict[tuple[str, str], _Users] = attrs.field(
        factory=dict, repr=False, alias="_limit_users"
    )
    #: the limit each node's inlimits were indexed under (owners can change)
    _limit_keys: dict[Node, list[tuple[str, str]]] = attrs.field(
        factory=dict, repr=False, alias="_limit_keys"
    )

    # ---------------------------------------------------------------- flows

    def add_flow(self, flow: Flow) -> Flow:
        """Attach a flow. Returns it.

        Raises:
            DuplicateNameError: a flow of that name exists.
        """
        if not isinstance(flow, Flow):
            raise InvalidValueError(f"add_flow takes a Flow, not {type(flow).__name__}")
        if flow.name in self.flows:
            raise DuplicateNameError(f"a flow named {flow.name} already exists")
        if flow._bunch is not None:
            raise InvalidValueError(f"flow {flow.name} already belongs to a bunch")
        self.flows[flow.name] = flow
        flow._bunch = self
        changes: list[Change] = []
        with gc_paused(long_lived=True):
            self._attach(flow, changes)
        self._record(changes)
        return flow

    def delete_flow(self, name: str) -> list[Change]:
        flow = self.flows.get(name)
        if flow is None:
            raise NodeNotFoundError(f"no flow {name}")
        changes: list[Change] = []
        self._detach(flow, changes)
        del self.flows[name]
        flow._bunch = None
        self._record(changes)
        return changes

    def find_node(self, path: str) -> Node:
        """The node at absolute ``path`` (``/flow/fam/task``).

        Raises:
            NodeNotFoundError: nothing there.
        """
        norm = "/" + "/".join(p for p in path.split("/") if p)
        node = self._paths.get(norm)
        if node is None:
            raise NodeNotFoundError(f"no node {path}")
        return node

    def get_node(self, path: str) -> Node | None:
        return self._paths.get(path)

    def walk(self) -> Iterator[Node]:
        for flow in self.flows.values():
            yield from flow.walk()

    @property
    def task_count(self) -> int:
        """How many tasks the bunch holds (kept up to date, not counted)."""
        return self._tasks

    def tasks(self) -> Iterator[Task]:
        for flow in self.flows.values():
            yield from flow.tasks()

    def set_parameter(self, name: str, value: object) -> list[Change]:
        """Add or change a server variable (seen by every flow)."""
        check_name(name, "parameter name")
        old = self.parameters.get(name)
        self.parameters[name] = new = _param_value(name, value)
        changes = [Change("/", ChangeKind.variable, name, old, new)]
        self._record(changes)
        return changes

    # ---------------------------------------------------------------- journal

    def _record(self, changes: list[Change]) -> None:
        self.journal.extend(changes)

    def drain(self) -> list[Change]:
        """Take every change recorded since the last drain."""
        out, self.journal = self.journal, []
        return out

    # ---------------------------------------------------------------- indexes

    def _attach(self, root: Node, changes: list[Change]) -> None:
        # Paths are built parent to child once: node_path walks up the tree each time.
        nodes: list[tuple[Node, str]] = []
        stack = [(root, root.node_path)]
        while stack:
            node, path = stack.pop()
            if path in self._paths:
                raise DuplicateNameError(f"{path} already exists")
            self._paths[path] = node
            node._path = path
            nodes.append((node, path))
            if isinstance(node, Family):
                stack.extend((c, f"{path}/{c.name}") for c in reversed(node.children))
        self._tasks += sum(1 for node, _ in nodes if isinstance(node, Task))
        added = ChangeKind.node_added
        for node, path in nodes:
            # Nothing of a node outside the bunch is indexed (_detach unindexed it).
            if node.trigger is not None or node.complete_expr is not None or node.inlimits:
                self._index_node(node, path, fresh=True)
            changes.append(Change(path, added, None, None, node.kind))

    def _detach(self, root: Node, changes: list[Change]) -> None:
        from takler.core.limits import release_all

        nodes = list(root.walk())
        # Release first: a limit owned inside the subtree must still be found.
        for node in nodes:
            if isinstance(node, Task):
                release_all(self, node, changes, leaving=root)
        root_path = root.node_path
        for node in nodes:
            self._unindex_node(node)
            if self._paths.pop(node.node_path, None) is node and isinstance(node, Task):
                self._tasks -= 1
        for node in nodes:
            node._path = None
        changes.append(Change(root_path, ChangeKind.node_deleted, None, root.kind, None))

    def _index_node(self, node: Node, path: str | None = None, fresh: bool = False) -> None:
        """(Re)index ``node``'s expressions and inlimits; ``fresh``: nothing of it is indexed."""
        if not fresh:
            self._unindex_node(node)
        base = None
        for attr in (node.trigger, node.complete_expr):
            if attr is None:
                continue
            if base is None:
                base = (path or node.node_path).rpartition("/")[0]
            # abs_paths doubles as the record of what is indexed for this node.
            attr.abs_paths.clear()
            for ref in references_of(attr.expr):
                target = _resolve(base, ref.path)
                found = self._paths.get(target)
                if found is not None:
                    target = found.node_path  # the index's own string, not a copy
                attr.abs_paths[ref] = target
                if isinstance(ref, AttrRef):
                    _link(self._deps, (target, ref.name), node)
                    _link(self._var_deps, ref.name, node)
                else:
                    _link(self._deps, target, node)
        if node.inlimits:
            keys = []
            for inlimit in node.inlimits:
                owner = find_limit_owner(node, inlimit)
                key = (owner.node_path if owner is not None else inlimit.path, inlimit.name)
                _link(self._limit_users, key, node)
                keys.append(key)
            self._limit_keys[node] = keys

    def _unindex_node(self, node: Node) -> None:
        for attr in (node.trigger, node.complete_expr):
            if attr is None:
                continue
            for ref, target in attr.abs_paths.items():
                if isinstance(ref, AttrRef):
                    _unlink(self._deps, (target, ref.name), node)
                    _unlink(self._var_deps, ref.name, node)
                else:
                    _unlink(self._deps, target, node)
        for key in self._limit_keys.pop(node, ()):
            _unlink(self._limit_users, key, node)

    def dependents(self, change: Change) -> set[Node]:
        """Nodes whose trigger or complete expression ``change`` can affect."""
        kind = change.kind
        if kind is ChangeKind.status:
            return _users(self._deps, change.path)
        if kind in (ChangeKind.event, ChangeKind.meter, ChangeKind.repeat):
            out = _users(self._deps, (change.path, change.name or ""))
            if kind is ChangeKind.event:
                node = self._paths.get(change.path)
                event = node.events.get(change.name or "") if node is not None else None
                if event is not None and event.number is not None:
                    out |= _users(self._deps, (change.path, str(event.number)))
            return out
        if kind is ChangeKind.limit:
            key = (change.path, change.name or "")
            # Only expressions that read the limit's value: the tasks a full
            # limit holds back wait in its own queue (Limit.waiting).
            return _users(self._deps, key)
        if kind is ChangeKind.variable:
            users = _users(self._var_deps, change.name or "")
            prefix = change.path.rstrip("/") + "/"
            return {
                n
                for n in users
                for attr in (n.trigger, n.complete_expr)
                if attr is not None
                for p in attr.abs_paths.values()
                if p == change.path or p.startswith(prefix) or change.path == "/"
            }
        return set()

    def limit_users(self, owner_path: str, name: str) -> set[Node]:
        return _users(self._limit_users, (owner_path, name))

    # ---------------------------------------------------------------- hooks

    def _task_status_changed(self, task: Task, new: NodeStatus, changes: list[Change]) -> None:
        from takler.core.limits import on_task_status

        on_task_status(self, task, new, changes)

    def limits(self) -> Iterator[tuple[Node, Limit]]:
        for node in self.walk():
            for limit in node.limits.values():
                yield node, limit

    def is_attached(self, node: Node) -> bool:
        # Walking up to the flow is cheaper than building the path: every node
        # below an attached flow is in the path index (_attach, _detach).
        return node.bunch is self

    def family_of(self, path: str) -> Family | None:
        node = self._paths.get(path)
        return node if isinstance(node, Family) else None
