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

import datetime as dt
from collections.abc import Iterator

import attrs

from takler.core.attributes import Limit
from takler.core.change import Change, ChangeKind
from takler.core.errors import DuplicateNameError, InvalidValueError, NodeNotFoundError
from takler.core.node import Family, Flow, Node, ParamValue, Task, _param_value
from takler.core.status import NodeStatus

_EPOCH = dt.datetime(1970, 1, 1)

DepKey = tuple[str, str | None]


def resolve_path(owner: Node, path: str) -> str:
    """The absolute path ``path`` names when written in ``owner``'s expression.

    Relative paths count from the owner's parent, as in ecFlow: for
    ``/s/f/t2``, ``t1`` and ``./t1`` are ``/s/f/t1`` and ``../g`` is ``/s/g``.
    """
    if path.startswith("/"):
        parts = [p for p in path.split("/") if p]
    else:
        base = owner.parent.node_path if owner.parent is not None else ""
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
    _deps: dict[DepKey, set[Node]] = attrs.field(factory=dict, repr=False, alias="_deps")
    _var_deps: dict[str, set[Node]] = attrs.field(factory=dict, repr=False, alias="_var_deps")
    _limit_users: dict[tuple[str, str], set[Node]] = attrs.field(
        factory=dict, repr=False, alias="_limit_users"
    )
    #: per-node keys registered in the indexes, so unindexing is exact
    _node_keys: dict[Node, list[tuple[str, object]]] = attrs.field(
        factory=dict, repr=False, alias="_node_keys"
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

    def tasks(self) -> Iterator[Task]:
        for flow in self.flows.values():
            yield from flow.tasks()

    def set_parameter(self, name: str, value: object) -> list[Change]:
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
        for node in root.walk():
            path = node.node_path
            if path in self._paths:
                raise DuplicateNameError(f"{path} already exists")
            self._paths[path] = node
        for node in root.walk():
            self._index_node(node)
            changes.append(Change(node.node_path, ChangeKind.node_added, None, None, node.kind))

    def _detach(self, root: Node, changes: list[Change]) -> None:
        from takler.core.limits import release_all

        for node in root.walk():
            if isinstance(node, Task):
                release_all(self, node, changes)
            self._unindex_node(node)
            self._paths.pop(node.node_path, None)
        changes.append(Change(root.node_path, ChangeKind.node_deleted, None, root.kind, None))

    def _index_node(self, node: Node) -> None:
        from takler.core.expression import AttrRef, references
        from takler.core.limits import find_limit_owner

        self._unindex_node(node)
        keys: list[tuple[str, object]] = []
        for attr in (node.trigger, node.complete_expr):
            if attr is None:
                continue
            attr.abs_paths.clear()
            for ref in references(attr.expr):
                target = resolve_path(node, ref.path)
                attr.abs_paths[ref] = target
                if isinstance(ref, AttrRef):
                    key: DepKey = (target, ref.name)
                    self._var_deps.setdefault(ref.name, set()).add(node)
                    keys.append(("var", ref.name))
                else:
                    key = (target, None)
                self._deps.setdefault(key, set()).add(node)
                keys.append(("dep", key))
        for inlimit in node.inlimits:
            owner = find_limit_owner(node, inlimit)
            lkey = (owner.node_path if owner is not None else inlimit.path, inlimit.name)
            self._limit_users.setdefault(lkey, set()).add(node)
            keys.append(("limit", lkey))
        if keys:
            self._node_keys[node] = keys

    def _unindex_node(self, node: Node) -> None:
        keys = self._node_keys.pop(node, None)
        if not keys:
            return
        for kind, key in keys:
            table: dict = (
                self._deps if kind == "dep" else self._var_deps if kind == "var" else self._limit_users
            )
            users = table.get(key)
            if users is not None:
                users.discard(node)
                if not users:
                    del table[key]

    def dependents(self, change: Change) -> set[Node]:
        """Nodes whose trigger or complete expression ``change`` can affect."""
        kind = change.kind
        if kind is ChangeKind.status:
            return self._deps.get((change.path, None), set())
        if kind in (ChangeKind.event, ChangeKind.meter, ChangeKind.repeat):
            out = set(self._deps.get((change.path, change.name), ()))
            if kind is ChangeKind.event:
                node = self._paths.get(change.path)
                event = node.events.get(change.name or "") if node is not None else None
                if event is not None and event.number is not None:
                    out |= self._deps.get((change.path, str(event.number)), set())
            return out
        if kind is ChangeKind.limit:
            return self._deps.get((change.path, change.name), set()) | self._limit_users.get(
                (change.path, change.name or ""), set()
            )
        if kind is ChangeKind.variable:
            users = self._var_deps.get(change.name or "", set())
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
        return self._limit_users.get((owner_path, name), set())

    # ---------------------------------------------------------------- hooks

    def _task_status_changed(self, task: Task, new: NodeStatus, changes: list[Change]) -> None:
        from takler.core.limits import on_task_status

        on_task_status(self, task, new, changes)

    def limits(self) -> Iterator[tuple[Node, Limit]]:
        for node in self.walk():
            for limit in node.limits.values():
                yield node, limit

    def is_attached(self, node: Node) -> bool:
        return self._paths.get(node.node_path) is node

    def family_of(self, path: str) -> Family | None:
        node = self._paths.get(path)
        return node if isinstance(node, Family) else None
