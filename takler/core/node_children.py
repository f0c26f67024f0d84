"""A family's children: adding, finding by name, removing and counting them.

:class:`FamilyChildren` is a base of :class:`~takler.core.node.Family`, apart
only to keep modules short. It holds no state (``__slots__ = ()``, so nodes
still have no ``__dict__``): the fields it reads and writes are Family's. A
family's state derives from the counts of its children's states kept here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from takler.core.change import Change
from takler.core.errors import DuplicateNameError, NodeNotFoundError
from takler.core.status import NodeStatus, derive_from_counts

if TYPE_CHECKING:
    from takler.core.bunch import Bunch
    from takler.core.node import Node


class FamilyChildren:
    """A family's list of children and the counts of their states. A base of Family only."""

    if not TYPE_CHECKING:
        # No fields of its own, so families still have no __dict__. Hidden
        # from mypy, which would refuse writes to Family's fields (not slots here).
        __slots__ = ()
    else:
        # What the methods below use of Family. (Self is always a Family: the
        # writes that want one say "type: ignore[assignment]".)
        children: list[Node]
        _by_name: dict[str, Node]
        _counts: dict[NodeStatus, int]
        _derived: NodeStatus

        @property
        def node_path(self) -> str:
            raise NotImplementedError

        @property
        def bunch(self) -> Bunch | None:
            raise NotImplementedError

        @property
        def state(self) -> NodeStatus:
            raise NotImplementedError

        def _check_child(self, node: Node) -> None:
            raise NotImplementedError

        def _emit_state(self, old: NodeStatus, changes: list[Change]) -> None:
            raise NotImplementedError

        def _commit(self, changes: list[Change]) -> list[Change]:
            raise NotImplementedError

    def _child_state_changed(self, old: NodeStatus, new: NodeStatus, changes: list[Change]) -> None:
        counts = self._counts
        counts[old] = counts.get(old, 0) - 1
        counts[new] = counts.get(new, 0) + 1
        old_state = self.state
        self._derived = derive_from_counts(counts)
        self._emit_state(old_state, changes)

    def _recount(self) -> None:
        counts: dict[NodeStatus, int] = {}
        for child in self.children:
            counts[child.state] = counts.get(child.state, 0) + 1
        self._counts = counts
        self._derived = derive_from_counts(counts)

    def add_child(self, node: Node) -> Node:
        self._check_child(node)
        node.parent = self  # type: ignore[assignment]
        self.children.append(node)
        self._by_name[node.name] = node
        old_state = self.state
        state = node.state
        counts = self._counts
        counts[state] = counts.get(state, 0) + 1
        # One more child can only raise the derived state (derive_from_counts).
        if state.rank > self._derived.rank:
            self._derived = state
        bunch = self.bunch
        changes: list[Change] = []
        if bunch is not None:
            bunch._attach(node, changes)
        self._emit_state(old_state, changes)
        self._commit(changes)
        return node

    def add_children(self, nodes: Iterable[Node]) -> None:
        """Add each node as :meth:`add_child` would, all or none.

        A family outside any bunch (one being built) takes them in one pass
        and derives its state once; one in a bunch adds them one by one.

        Raises:
            InvalidValueError, DuplicateNameError: as add_child; nothing is added.
        """
        nodes = list(nodes)
        if self.bunch is not None:
            for node in nodes:
                self._check_child(node)
            if len({node.name for node in nodes}) != len(nodes):
                raise DuplicateNameError(f"{self.node_path}: two children have the same name")
            for node in nodes:
                self.add_child(node)
            return
        added: set[str] = set()
        for node in nodes:
            self._check_child(node)
            if node.name in added:
                raise DuplicateNameError(
                    f"{self.node_path}: a child named {node.name} already exists"
                )
            added.add(node.name)
        self._adopt_children(nodes)

    def _adopt_children(self, nodes: list[Node]) -> None:
        """:meth:`add_children` of a family outside any bunch, without its checks:
        for nodes known to pass them (new, of unique names; the codec's)."""
        old_state = self.state
        counts = self._counts
        by_name = self._by_name
        for node in nodes:
            node.parent = self  # type: ignore[assignment]
            by_name[node.name] = node
            state = node.state
            counts[state] = counts.get(state, 0) + 1
        self.children.extend(nodes)
        self._derived = derive_from_counts(counts)
        self._emit_state(old_state, [])

    def child(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise NodeNotFoundError(f"{self.node_path} has no child {name}") from None

    def remove_child(self, node: Node) -> list[Change]:
        if self._by_name.get(node.name) is not node:
            raise NodeNotFoundError(f"{node.node_path} is not a child of {self.node_path}")
        changes: list[Change] = []
        bunch = self.bunch
        if bunch is not None:
            bunch._detach(node, changes)
        self.children.remove(node)
        del self._by_name[node.name]
        node.parent = None
        old_state = self.state
        self._counts[node.state] -= 1
        self._derived = derive_from_counts(self._counts)
        self._emit_state(old_state, changes)
        return self._commit(changes)
