"""The flow tree: Node, Family (NodeContainer), Task and Flow.

Nodes carry attributes and state. Every mutation returns the list of
:class:`~takler.core.change.Change` records it made and, when the node is
attached to a :class:`~takler.core.bunch.Bunch`, appends them to its journal.
Operations that span the tree (requeue, force, begin...) live in
:mod:`takler.core.ops`.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from takler.core.attributes import (
    Event,
    ExprAttr,
    InLimit,
    Label,
    Limit,
    Meter,
    check_name,
)
from takler.core.change import Change, ChangeKind
from takler.core.errors import (
    AttributeNotFoundError,
    DuplicateNameError,
    InvalidValueError,
    NodeNotFoundError,
    StateError,
)
from takler.core.expression import BinOp, parse_expression
from takler.core.status import QUIET, NodeStatus, derive_from_counts

if TYPE_CHECKING:
    from takler.core.bunch import Bunch

ParamValue = str | int | float | bool
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _param_value(name: str, value: object) -> ParamValue:
    # Exact types first: the common case, without the checks below.
    if type(value) is str or type(value) is bool:
        return value
    if type(value) is int and _I64_MIN <= value <= _I64_MAX:
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValueError(f"parameter {name}: value must be a finite number, not {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not _I64_MIN <= value <= _I64_MAX:
        raise InvalidValueError(f"parameter {name}: integer {value} is beyond 64 bits")
    if isinstance(value, str | int | float | bool):
        return value
    raise InvalidValueError(
        f"parameter {name}: value must be str, int, float, bool or a path, not {type(value).__name__}"
    )


_EMPTY: Mapping[str, Any] = MappingProxyType({})
_T = TypeVar("_T")


def _node_name(name: object) -> str:
    # Names repeat across families (t0, t1...): one string object each saves memory.
    return sys.intern(check_name(name))


def _with(table: Mapping[str, _T], name: str, item: _T) -> dict[str, _T]:
    """``table`` (the node's own dict, or the shared empty one) with ``name`` added."""
    own = table if isinstance(table, dict) else {}
    own[name] = item
    return own


def _appended(items: Sequence[_T], item: _T) -> list[_T]:
    own = items if isinstance(items, list) else []
    own.append(item)
    return own


# No on_setattr hooks: attribute writes stay plain slot writes (the model's hot path).
@attrs.define(eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class Node:
    """A node of a flow. Use Task, Family or Flow."""

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

    # ---------------------------------------------------------------- parameters

    def add_parameter(self, name: str, value: object) -> ParamValue:
        """Define a user parameter (ecFlow ``edit``). Returns the stored value.

        Raises:
            InvalidNameError: bad name. DuplicateNameError: already defined here.
        """
        check_name(name, "parameter name")
        if name in self.parameters:
            raise DuplicateNameError(f"{self.node_path}: parameter {name} already exists")
        self.set_parameter(name, value)
        return self.parameters[name]

    def _set_param(self, name: str, value: object) -> ParamValue:
        stored = _param_value(name, value)
        self.parameters[name] = stored
        return stored

    def set_parameter(self, name: str, value: object) -> list[Change]:
        """Add or change a user parameter."""
        check_name(name, "parameter name")
        old = self.parameters.get(name)
        new = self._set_param(name, value)
        return self._commit([Change(self.node_path, ChangeKind.variable, name, old, new)])

    def delete_parameter(self, name: str) -> list[Change]:
        if name not in self.parameters:
            raise AttributeNotFoundError(f"{self.node_path}: no parameter {name}")
        old = self.parameters.pop(name)
        return self._commit([Change(self.node_path, ChangeKind.variable, name, old, None)])

    def generated_parameters(self) -> dict[str, ParamValue]:
        """Parameters takler computes for this node (see :mod:`takler.core.params`)."""
        from takler.core.params import generated_parameters

        return generated_parameters(self)

    def find_parameter(self, name: str) -> ParamValue | None:
        """Look ``name`` up: user then generated, node then ancestors, then the bunch."""
        from takler.core.params import find_parameter

        return find_parameter(self, name)

    def all_parameters(self) -> dict[str, tuple[ParamValue, str, str]]:
        """Every visible parameter: name -> (value, origin, defining path)."""
        from takler.core.params import all_parameters

        return all_parameters(self)

    # ---------------------------------------------------------------- attributes

    def _check_free_attr(self, name: str) -> None:
        if name in self.events or name in self.meters or name in self.labels:
            raise DuplicateNameError(f"{self.node_path}: attribute {name} already exists")

    def add_event(self, name: str | int, number: int | None = None, initial: bool = False) -> Event:
        """Add an event. ``name`` may be a number (ecFlow ``event 1``)."""
        if isinstance(name, int) and not isinstance(name, bool):
            number, name = name, str(name)
        name = check_name(name, "event name")
        self._check_free_attr(name)
        if number is not None and any(e.number == number for e in self.events.values()):
            raise DuplicateNameError(f"{self.node_path}: event number {number} already exists")
        event = Event(name=name, number=number, initial=bool(initial), value=bool(initial))
        self.events = _with(self.events, name, event)
        return event

    def add_meter(
        self, name: str, minimum: int, maximum: int, threshold: int | None = None
    ) -> Meter:
        check_name(name, "meter name")
        self._check_free_attr(name)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (minimum, maximum)):
            raise InvalidValueError(f"meter {name}: minimum and maximum must be integers")
        if minimum > maximum:
            raise InvalidValueError(f"meter {name}: minimum {minimum} is above maximum {maximum}")
        if threshold is not None and not minimum <= threshold <= maximum:
            raise InvalidValueError(f"meter {name}: threshold {threshold} outside the range")
        meter = Meter(name=name, minimum=minimum, maximum=maximum, threshold=threshold, value=minimum)
        self.meters = _with(self.meters, name, meter)
        return meter

    def add_label(self, name: str, text: str = "") -> Label:
        check_name(name, "label name")
        self._check_free_attr(name)
        label = Label(name=name, default=str(text), value=str(text))
        self.labels = _with(self.labels, name, label)
        return label

    def add_limit(self, name: str, maximum: int) -> Limit:
        check_name(name, "limit name")
        if name in self.limits:
            raise DuplicateNameError(f"{self.node_path}: limit {name} already exists")
        if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 0:
            raise InvalidValueError(f"limit {name}: maximum must be a non-negative integer")
        limit = Limit(name=name, maximum=maximum)
        self.limits = _with(self.limits, name, limit)
        bunch = self.bunch
        if bunch is not None:
            # Inlimits below may now name this limit: index them against it.
            for node in self.walk():
                if node.inlimits:
                    bunch._index_node(node)
        return limit

    def add_in_limit(
        self,
        spec: str,
        tokens: int = 1,
        node_only: bool = False,
        submission_only: bool = False,
    ) -> InLimit:
        """Claim tokens of a limit: ``"L"`` (searched up the tree) or ``"/flow/fam:L"``."""
        inlimit = InLimit.parse(
            spec, tokens, node_only=bool(node_only), submission_only=bool(submission_only)
        )
        if any(i.spec == inlimit.spec for i in self.inlimits):
            raise DuplicateNameError(f"{self.node_path}: inlimit {inlimit.spec} already exists")
        self.inlimits = _appended(self.inlimits, inlimit)
        bunch = self.bunch
        if bunch is not None:
            bunch._index_node(self)
        return inlimit

    def find_event(self, name: str) -> Event:
        event = self.events.get(name)
        if event is None and name.isdigit():
            event = next((e for e in self.events.values() if e.number == int(name)), None)
        if event is None:
            raise AttributeNotFoundError(f"{self.node_path}: no event {name}")
        return event

    def find_meter(self, name: str) -> Meter:
        try:
            return self.meters[name]
        except KeyError:
            raise AttributeNotFoundError(f"{self.node_path}: no meter {name}") from None

    def find_label(self, name: str) -> Label:
        try:
            return self.labels[name]
        except KeyError:
            raise AttributeNotFoundError(f"{self.node_path}: no label {name}") from None

    def set_event(self, name: str, value: bool = True) -> list[Change]:
        event = self.find_event(name)
        old, event.value = event.value, bool(value)
        if old == event.value:
            return []
        return self._commit([Change(self.node_path, ChangeKind.event, event.name, old, event.value)])

    def set_meter(self, name: str, value: int) -> list[Change]:
        meter = self.find_meter(name)
        meter.check(value)
        old, meter.value = meter.value, value
        if old == value:
            return []
        return self._commit([Change(self.node_path, ChangeKind.meter, name, old, value)])

    def set_label(self, name: str, text: str) -> list[Change]:
        label = self.find_label(name)
        old, label.value = label.value, str(text)
        if old == label.value:
            return []
        return self._commit([Change(self.node_path, ChangeKind.label, name, old, label.value)])

    def set_limit_max(self, name: str, maximum: int) -> list[Change]:
        limit = self.limits.get(name)
        if limit is None:
            raise AttributeNotFoundError(f"{self.node_path}: no limit {name}")
        if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 0:
            raise InvalidValueError(f"limit {name}: maximum must be a non-negative integer")
        old, limit.maximum = limit.maximum, maximum
        return self._commit([Change(self.node_path, ChangeKind.limit, name, old, maximum)])

    # ---------------------------------------------------------------- expressions

    def add_trigger(self, text: str) -> ExprAttr:
        """Add a trigger; a second call ANDs with the first.

        Raises:
            ExpressionSyntaxError: the text does not parse (the node is unchanged).
        """
        return self._add_expr("trigger", text)

    def add_complete(self, text: str) -> ExprAttr:
        """Add a complete expression; a second call ORs with the first, as ecFlow's ``-o``."""
        return self._add_expr("complete", text)

    def _add_expr(self, which: str, text: str) -> ExprAttr:
        expr = parse_expression(text)
        current = self.trigger if which == "trigger" else self.complete_expr
        if current is not None:
            expr = BinOp("and" if which == "trigger" else "or", current.expr, expr)
        return self._put_expr(which, expr)

    def _put_expr(self, which: str, expr: Any) -> ExprAttr:
        attr_name = "trigger" if which == "trigger" else "complete_expr"
        new = ExprAttr(expr) if expr is not None else None
        bunch = self.bunch
        if bunch is None:
            # A node being built (each node of a loaded flow): nothing to index or journal.
            setattr(self, attr_name, new)
            return new  # type: ignore[return-value]
        old: ExprAttr | None = getattr(self, attr_name)
        bunch._unindex_node(self)
        setattr(self, attr_name, new)
        bunch._index_node(self)
        self._commit(
            [
                Change(
                    self.node_path,
                    ChangeKind.trigger,
                    which,
                    old.text if old else None,
                    new.text if new else None,
                )
            ]
        )
        return new  # type: ignore[return-value]

    def replace_expression(self, which: str, text: str | None) -> list[Change]:
        """Replace (or, with ``None`` or empty text, delete) the trigger or complete."""
        if which not in ("trigger", "complete"):
            raise InvalidValueError(f"expected 'trigger' or 'complete', not {which!r}")
        expr = parse_expression(text) if text and text.strip() else None
        bunch = self.bunch
        mark = len(bunch.journal) if bunch is not None else 0
        self._put_expr(which, expr)
        return list(bunch.journal[mark:]) if bunch is not None else []

    # ---------------------------------------------------------------- repeats, times

    def add_repeat(self, repeat: Any) -> Any:
        """Add a repeat: a Repeat or its text (``"date YMD 20200101 20201231 1"``)."""
        from takler.core.repeat import parse_repeat

        if self.repeat is not None:
            raise DuplicateNameError(f"{self.node_path}: a node has at most one repeat")
        if isinstance(repeat, str):
            repeat = parse_repeat(repeat)
        self.repeat = repeat
        return repeat

    def _add_time(self, keyword: str, spec: Any) -> Any:
        from takler.core.timeattr import parse_time_attr

        attr = parse_time_attr(keyword, spec) if isinstance(spec, str) else spec
        self.times = _appended(self.times, attr)
        return attr

    def add_time(self, spec: str) -> Any:
        return self._add_time("time", spec)

    def add_today(self, spec: str) -> Any:
        return self._add_time("today", spec)

    def add_date(self, spec: str) -> Any:
        return self._add_time("date", spec)

    def add_day(self, spec: str) -> Any:
        return self._add_time("day", spec)

    def add_cron(self, spec: str) -> Any:
        return self._add_time("cron", spec)

    def add_late(self, spec: Any) -> Any:
        from takler.core.late import parse_late

        if self.late is not None:
            raise DuplicateNameError(f"{self.node_path}: a node has at most one late")
        self.late = parse_late(spec) if isinstance(spec, str) else spec
        return self.late

    def set_defstatus(self, status: NodeStatus | str) -> None:
        if isinstance(status, str):
            status = NodeStatus.parse(status)
        self.defstatus = status

    def add_defstatus(self, status: NodeStatus | str) -> None:
        self.set_defstatus(status)


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
class Family(Node):
    """A container of families and tasks; its state derives from its children."""

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

    def _check_child(self, node: Node) -> None:
        if not isinstance(node, Node) or isinstance(node, Flow):
            raise InvalidValueError(f"{self.node_path}: cannot add {node!r} as a child")
        if node.parent is not None:
            raise InvalidValueError(f"{node.node_path} already belongs to a flow")
        if node.name in self._by_name:
            raise DuplicateNameError(f"{self.node_path}: a child named {node.name} already exists")

    def add_child(self, node: Node) -> Node:
        self._check_child(node)
        node.parent = self
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
            node.parent = self
            by_name[node.name] = node
            state = node.state
            counts[state] = counts.get(state, 0) + 1
        self.children.extend(nodes)
        self._derived = derive_from_counts(counts)
        self._emit_state(old_state, [])

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

    def child(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise NodeNotFoundError(f"{self.node_path} has no child {name}") from None

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
