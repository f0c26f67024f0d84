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


_DOTS = frozenset({".", "..", ""})


def _resolve(base: str, path: str) -> str:
    """``path`` made absolute from ``base``, the path of the referring node's parent."""
    if "/" not in path and path not in _DOTS:
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


def subtree_paths(root: Node) -> dict[str, Node]:
    """``root`` and every node below it by path, parents first (each path built
    once, from its parent's: node_path walks up the tree each time)."""
    paths: dict[str, Node] = {}
    stack = [(root, root.node_path)]
    pop, push = stack.pop, stack.append
    while stack:
        node, path = pop()
        paths[path] = node
        if isinstance(node, Family):
            for child in reversed(node.children):
                push((child, f"{path}/{child.name}"))
    return paths


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

    def add_flow(
        self, flow: Flow, *, journal: bool = True, paths: dict[str, Node] | None = None
    ) -> Flow:
        """Attach a flow. Returns it.

        Args:
            flow: a flow outside any bunch.
            journal: record a node_added change for each of its nodes. A
                restore, which drops the journal, need not make them.
            paths: each node of the flow by its path, parents first, as
                :func:`takler.codec.load_flow` gives them; the tree must not
                have changed since. Saves walking a big flow once more.

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
        changes: list[Change] | None = [] if journal else None
        try:
            with gc_paused(long_lived=True):
                self._attach(flow, changes, paths)
        except DuplicateNameError:
            # Raised before anything was indexed: leave the bunch as it was.
            del self.flows[flow.name]
            flow._bunch = None
            raise
        if changes:
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

    def live_tasks(self) -> Iterator[Task]:
        """Every task queued, submitted, active or aborted (see :meth:`Family.live_tasks`)."""
        for flow in self.flows.values():
            yield from flow.live_tasks()

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

    def _attach(
        self, root: Node, changes: list[Change] | None, paths: dict[str, Node] | None = None
    ) -> None:
        """Index ``root`` and its subtree (``paths``: by path, if known), all or
        nothing; journal a node_added change for each node into ``changes``,
        unless None (a restore journals nothing)."""
        if paths is None:
            paths = subtree_paths(root)
        index = self._paths
        if not index.keys().isdisjoint(paths):
            taken = next(path for path in paths if path in index)
            raise DuplicateNameError(f"{taken} already exists")
        index.update(paths)
        tasks = 0
        for path, node in paths.items():
            node._path = path
            if isinstance(node, Task):
                tasks += 1
        self._tasks += tasks
        # Nothing of a node outside the bunch is indexed (_detach unindexed it).
        index_node = self._index_node
        for path, node in paths.items():
            if node.trigger is not None or node.complete_expr is not None or node.inlimits:
                index_node(node, path, fresh=True)
        if changes is not None:
            added = ChangeKind.node_added
            changes.extend(
                Change(path, added, None, None, node.kind) for path, node in paths.items()
            )

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
        trigger, complete = node.trigger, node.complete_expr
        if trigger is not None or complete is not None:
            base = (path or node.node_path).rpartition("/")[0]
            paths, deps = self._paths, self._deps
            for attr in (trigger, complete):
                if attr is None:
                    continue
                targets = []
                for ref in references_of(attr.expr):
                    target = _resolve(base, ref.path)
                    found = paths.get(target)
                    if found is not None:
                        target = found._path or target  # the index's own string, not a copy
                    targets.append(target)
                    if type(ref) is AttrRef:
                        _link(deps, (target, ref.name), node)
                        _link(self._var_deps, ref.name, node)
                    else:
                        _link(deps, target, node)
                # targets doubles as the record of what is indexed for this node.
                attr.targets = tuple(targets)
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
            if attr is None or not attr.targets:
                continue
            refs = references_of(attr.expr)
            for ref, target in zip(refs, attr.targets, strict=True):
                if isinstance(ref, AttrRef):
                    _unlink(self._deps, (target, ref.name), node)
                    _unlink(self._var_deps, ref.name, node)
                else:
                    _unlink(self._deps, target, node)
            attr.targets = ()
        for key in self._limit_keys.pop(node, ()):
            _unlink(self._limit_users, key, node)

    def dependents(self, change: Change) -> set[Node]:
        """Nodes whose trigger or complete expression ``change`` can affect."""
        kind = change.kind
        if kind is ChangeKind.status:
            return _users(self._deps, change.path)
        if kind is ChangeKind.attribute:
            data = change.new if change.new is not None else change.old
            out = _users(self._deps, (change.path, change.name or ""))
            number = data.get("number") if isinstance(data, dict) else None
            if number is not None:
                out |= _users(self._deps, (change.path, str(number)))
            return out
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
                for p in attr.targets
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
