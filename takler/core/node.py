"""The flow tree: Node, Family (NodeContainer), Task and Flow.

Nodes carry attributes and state. Every mutation returns the list of
:class:`~takler.core.change.Change` records it made and, when the node is
attached to a :class:`~takler.core.bunch.Bunch`, appends them to its journal.
Operations that span the tree (requeue, force, begin...) live in
:mod:`takler.core.ops`. Two bases keep this module short: a node's parameter
and attribute methods are in :mod:`takler.core.node_attrs`, a family's adding,
removing and counting of children in :mod:`takler.core.node_children`.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from takler.core.attributes import Event, ExprAttr, InLimit, Label, Limit, Meter, check_name
from takler.core.change import Change, ChangeKind
from takler.core.errors import DuplicateNameError, InvalidValueError, NodeNotFoundError, StateError
from takler.core.node_attrs import NodeAttributes, ParamValue
from takler.core.node_attrs import _param_value as _param_value  # bunch, codec
from takler.core.node_children import FamilyChildren
from takler.core.status import QUIET, NodeStatus

if TYPE_CHECKING:
    from takler.core.bunch import Bunch

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _node_name(name: object) -> str:
    # Names repeat across families (t0, t1...): one string object each saves memory.
    return sys.intern(check_name(name))


# No on_setattr hooks: attribute writes stay plain slot writes (the model's hot path).
@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Node(NodeAttributes):
    """A node of a flow. Use Task, Family or Flow.

    Its parameter and attribute methods (add_parameter, add_event,
    add_trigger, add_repeat...) are in :class:`~takler.core.node_attrs.NodeAttributes`.
    """

    kind: ClassVar[str] = "node"

    name: str = attrs.field(converter=_node_name)
    parent: NodeContainer | None = attrs.field(default=None, init=False)
    suspended: bool = attrs.field(default=False, init=False)
    defstatus: NodeStatus | None = attrs.field(default=None, init=False)
    parameters: dict[str, ParamValue] = attrs.field(factory=dict, init=False)
    # Most nodes have no events, meters, labels, limits, inlimits, times or
    # flags: they share one empty, read-only value until an add_* method gives
    # the node its own. Change them through the add_*/set_* methods.
    events: Mapping[str, Event] = attrs.field(default=_EMPTY, init=False)
    meters: Mapping[str, Meter] = attrs.field(default=_EMPTY, init=False)
    labels: Mapping[str, Label] = attrs.field(default=_EMPTY, init=False)
    limits: Mapping[str, Limit] = attrs.field(default=_EMPTY, init=False)
    inlimits: Sequence[InLimit] = attrs.field(default=(), init=False)
    trigger: ExprAttr | None = attrs.field(default=None, init=False)
    complete_expr: ExprAttr | None = attrs.field(default=None, init=False)
    repeat: Any = attrs.field(default=None, init=False)
    times: Sequence[Any] = attrs.field(default=(), init=False)
    late: Any = attrs.field(default=None, init=False)
    autocancel: str | None = attrs.field(default=None, init=False)
    #: when the node's state last changed (flow clock), for "time in state"
    state_since: dt.datetime | None = attrs.field(default=None, init=False)
    #: extra flags (late, zombie...) shown to operators; replaced, never mutated
    flags: AbstractSet[str] = attrs.field(default=frozenset(), init=False)
    #: the node's path while in a bunch (set by its path index, which holds the
    #: same string), else None: a path is asked for on every change
    _path: str | None = attrs.field(default=None, init=False, repr=False, alias="_path")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node_path} {self.state.value}>"

    # ---------------------------------------------------------------- tree

    @property
    def node_path(self) -> str:
        path = self._path
        if path is not None:
            return path
        parts = []
        node: Node | None = self
        while node is not None:
            known = node._path
            if known is not None:
                parts.append(known)
                return "/".join(reversed(parts))
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))

    @property
    def flow(self) -> Flow:
        """The flow this node belongs to.

        Raises:
            StateError: the node is not (yet) part of a flow.
        """
        node: Node = self
        while node.parent is not None:
            node = node.parent
        if not isinstance(node, Flow):
            raise StateError(f"{self.node_path} is not part of a flow")
        return node

    @property
    def bunch(self) -> Bunch | None:
        node: Node = self
        while node.parent is not None:
            node = node.parent
        return node._bunch if isinstance(node, Flow) else None

    def ancestors(self) -> Iterator[NodeContainer]:
        """Parent, grandparent... up to the flow."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def walk(self) -> Iterator[Node]:
        """This node and its descendants, parents first."""
        yield self

    def tasks(self) -> Iterator[Task]:
        for node in self.walk():
            if isinstance(node, Task):
                yield node

    # ---------------------------------------------------------------- state

    @property
    def status(self) -> NodeStatus:
        raise NotImplementedError  # pragma: no cover - Node is abstract

    @property
    def state(self) -> NodeStatus:
        """The state operators see: ``suspended`` while suspended, else status."""
        return NodeStatus.suspended if self.suspended else self.status

    def is_suspended_in_tree(self) -> bool:
        return self.suspended or any(a.suspended for a in self.ancestors())

    def _commit(self, changes: list[Change]) -> list[Change]:
        if changes:
            bunch = self.bunch
            if bunch is not None:
                bunch._record(changes)
        return changes

    def _emit_state(self, old: NodeStatus, changes: list[Change]) -> None:
        """Propagate a change of this node's display state up the tree."""
        new = self.state
        if new is old:
            return
        bunch = self.bunch
        if bunch is not None:
            self.state_since = bunch.now
        changes.append(Change(self.node_path, ChangeKind.status, None, old.value, new.value))
        parent = self.parent
        if parent is not None:
            parent._child_state_changed(old, new, changes)


@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Task(Node):
    """A leaf: its script becomes a job."""

    kind: ClassVar[str] = "task"

    _status: NodeStatus = attrs.field(default=NodeStatus.unknown, init=False, alias="_status")
    tryno: int = attrs.field(default=0, init=False)
    password: str | None = attrs.field(default=None, init=False)
    rid: str | None = attrs.field(default=None, init=False)
    #: the runner's handle of the current job, as JSON-able data
    job: dict[str, Any] | None = attrs.field(default=None, init=False)
    #: why the task last aborted
    reason: str | None = attrs.field(default=None, init=False)
    submitted_at: dt.datetime | None = attrs.field(default=None, init=False)
    active_at: dt.datetime | None = attrs.field(default=None, init=False)

    @property
    def status(self) -> NodeStatus:
        return self._status

    def _set_status(self, new: NodeStatus, changes: list[Change]) -> None:
        if new is self._status:
            return
        old_state = self.state
        self._status = new
        bunch = self.bunch
        if bunch is not None:
            bunch._task_status_changed(self, new, changes)
        self._emit_state(old_state, changes)


@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Family(FamilyChildren, Node):
    """A container of families and tasks; its state derives from its children.

    Adding, finding and removing children by name (add_child, add_children,
    child, remove_child) is in :class:`~takler.core.node_children.FamilyChildren`.
    """

    kind: ClassVar[str] = "family"

    children: list[Node] = attrs.field(factory=list, init=False)
    _by_name: dict[str, Node] = attrs.field(factory=dict, init=False, repr=False, alias="_by_name")
    _counts: dict[NodeStatus, int] = attrs.field(factory=dict, init=False, repr=False, alias="_counts")
    _derived: NodeStatus = attrs.field(default=NodeStatus.unknown, init=False, alias="_derived")

    @property
    def status(self) -> NodeStatus:
        return self._derived

    def walk(self) -> Iterator[Node]:
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, Family):
                stack.extend(reversed(node.children))

    def live_tasks(self) -> Iterator[Task]:
        """The tasks at or below this family whose status is queued, submitted,
        active or aborted, parents first; the rest of :meth:`tasks` are unknown
        or complete.

        A subtree whose derived state is unknown or complete holds none of
        them (a state derives as the most significant of its children's, and
        a suspended child shows ``suspended``), so it is not walked: a flow
        loaded and never begun costs nothing to scan.
        """
        quiet = QUIET
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, Family):
                if node._derived not in quiet:
                    stack.extend(reversed(node.children))
            elif isinstance(node, Task) and node._status not in quiet:
                yield node

    def _check_child(self, node: Node) -> None:
        if not isinstance(node, Node) or isinstance(node, Flow):
            raise InvalidValueError(f"{self.node_path}: cannot add {node!r} as a child")
        if node.parent is not None:
            raise InvalidValueError(f"{node.node_path} already belongs to a flow")
        if node.name in self._by_name:
            raise DuplicateNameError(f"{self.node_path}: a child named {node.name} already exists")

    def add_task(self, task: Task | str) -> Task:
        """Add a task (or a new Task of that name); returns it."""
        node = Task(task) if isinstance(task, str) else task
        if not isinstance(node, Task):
            raise InvalidValueError(f"add_task takes a Task, not {type(task).__name__}")
        self.add_child(node)
        return node

    def add_family(self, family: Family | str) -> Family:
        """Add a family (or a new Family of that name); returns it."""
        node = Family(family) if isinstance(family, str) else family
        if not isinstance(node, Family) or isinstance(node, Flow):
            raise InvalidValueError(f"add_family takes a Family, not {type(family).__name__}")
        self.add_child(node)
        return node

    add_container = add_family

    def find_node(self, path: str) -> Node:
        """The node at ``path``: relative to this node, or absolute within its flow."""
        if path.startswith("/"):
            bunch = self.bunch
            if bunch is not None:
                return bunch.find_node(path)
            parts = [p for p in path.split("/") if p]
            if not parts or parts[0] != self.flow.name:
                raise NodeNotFoundError(f"no node {path}")
            node: Node = self.flow
            parts = parts[1:]
        else:
            node = self
            parts = [p for p in path.split("/") if p]
        for part in parts:
            if part == ".":
                continue
            if part == "..":
                if node.parent is None:
                    raise NodeNotFoundError(f"no node {path} from {self.node_path}")
                node = node.parent
                continue
            if not isinstance(node, Family):
                raise NodeNotFoundError(f"no node {path}: {node.node_path} is a task")
            found = node._by_name.get(part)
            if found is None:
                raise NodeNotFoundError(f"no node {path} (no {part} in {node.node_path})")
            node = found
        return node


#: The first takler's name for a family.
NodeContainer = Family


@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Flow(Family):
    """The root of a tree of families and tasks (ecFlow's suite)."""

    kind: ClassVar[str] = "flow"

    begun: bool = attrs.field(default=False, init=False)
    clock: str | None = attrs.field(default=None, init=False)
    #: the flow clock at the last begin or requeue (base of ``+HH:MM`` times)
    begun_at: dt.datetime | None = attrs.field(default=None, init=False)
    _bunch: Bunch | None = attrs.field(default=None, init=False, repr=False, alias="_bunch")

    @classmethod
    def from_def(cls, path: str | PurePath) -> Flow:
        """The one flow in an ecFlow definition file.

        Raises:
            DefinitionError: the file is malformed, unsupported, or holds not exactly one suite.
        """
        from takler.core.errors import DefinitionError
        from takler.ecflow.defs import flows_from_def_file

        flows = flows_from_def_file(path)
        if len(flows) != 1:
            raise DefinitionError(f"{path}: expected one suite, found {len(flows)}")
        return flows[0]

    def check(self, paths: dict[str, Node] | None = None) -> list[str]:
        """Every reference in the flow that does not resolve, one line each.

        ``paths``: each node by its path, if known (see :func:`takler.codec.load_flow`).
        """
        from takler.core.checks import check_flow

        return check_flow(self, paths)


def _quick_init(cls: type[Node]) -> None:
    """Give ``cls`` an ``__init__`` that does what attrs' own does, faster.

    attrs' generated ``__init__`` looks each field's default up in a table
    (two lookups per field, some thirty fields): a tenth of the time building
    a 100k-task flow. This one is generated from the same fields, with each
    default bound once. Only ``name`` is an argument: every other field has
    ``init=False``.
    """
    lines = ["def __init__(self, name):"]
    scope: dict[str, Any] = {}
    for field in attrs.fields(cls):
        assert field.validator is None, field.name
        if field.init:
            assert field.name == "name", field.name
            scope["convert_name"] = field.converter
            lines.append("    self.name = convert_name(name)")
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            factory = field.default.factory  # type: ignore[union-attr]
            literal = {dict: "{}", list: "[]"}.get(factory)
            if literal is None:
                scope[f"make_{field.name}"] = factory
                literal = f"make_{field.name}()"
            lines.append(f"    self.{field.name} = {literal}")
        else:
            scope[f"default_{field.name}"] = field.default
            lines.append(f"    self.{field.name} = default_{field.name}")
    exec("\n".join(lines), scope)  # code made above from the class's own fields
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]


for _cls in (Task, Family, Flow):
    _quick_init(_cls)
