"""The parameter and attribute methods of a node: parameters; events, meters,
labels, limits and inlimits; trigger and complete; repeat, times, late and
defstatus.

:class:`NodeAttributes` is a base of :class:`~takler.core.node.Node`, apart
only to keep modules short. It holds no state (``__slots__ = ()``, so nodes
still have no ``__dict__``): the fields it reads and writes are Node's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TypeVar

from takler.core.attributes import Event, ExprAttr, InLimit, Label, Limit, Meter, check_name
from takler.core.change import Change, ChangeKind
from takler.core.errors import AttributeNotFoundError, DuplicateNameError, InvalidValueError
from takler.core.expression import BinOp, parse_expression
from takler.core.status import NodeStatus

if TYPE_CHECKING:
    from takler.core.bunch import Bunch
    from takler.core.node import Node

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


_T = TypeVar("_T")


def _with(table: Mapping[str, _T], name: str, item: _T) -> dict[str, _T]:
    """``table`` (the node's own dict, or the shared empty one) with ``name`` added."""
    own = table if isinstance(table, dict) else {}
    own[name] = item
    return own


def _attribute_data(attr: Event | Meter | Label) -> dict[str, Any]:
    """An event, meter or label as data, as an ``attribute`` change carries it."""
    if isinstance(attr, Event):
        return {"kind": "event", "name": attr.name, "number": attr.number,
                "initial": attr.initial, "value": attr.value}  # fmt: skip
    if isinstance(attr, Meter):
        return {"kind": "meter", "name": attr.name, "minimum": attr.minimum,
                "maximum": attr.maximum, "threshold": attr.threshold, "value": attr.value}  # fmt: skip
    return {"kind": "label", "name": attr.name, "default": attr.default, "value": attr.value}


def _appended(items: Sequence[_T], item: _T) -> list[_T]:
    own = items if isinstance(items, list) else []
    own.append(item)
    return own


class NodeAttributes:
    """Adding, finding and setting a node's parameters and attributes. A base of Node only."""

    if not TYPE_CHECKING:
        # No fields of its own, so nodes still have no __dict__. Hidden from
        # mypy, which would refuse the writes below to Node's fields (not slots here).
        __slots__ = ()
    else:
        # What the methods below use of Node. (Self is always a Node: the
        # calls that want one say "type: ignore[arg-type]".)
        parameters: dict[str, ParamValue]
        defstatus: NodeStatus | None
        events: Mapping[str, Event]
        meters: Mapping[str, Meter]
        labels: Mapping[str, Label]
        limits: Mapping[str, Limit]
        inlimits: Sequence[InLimit]
        trigger: ExprAttr | None
        complete_expr: ExprAttr | None
        repeat: Any
        times: Sequence[Any]
        late: Any

        @property
        def node_path(self) -> str:
            raise NotImplementedError

        @property
        def bunch(self) -> Bunch | None:
            raise NotImplementedError

        def walk(self) -> Iterator[Node]:
            raise NotImplementedError

        def _commit(self, changes: list[Change]) -> list[Change]:
            raise NotImplementedError

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

        return generated_parameters(self)  # type: ignore[arg-type]

    def find_parameter(self, name: str) -> ParamValue | None:
        """Look ``name`` up: user then generated, node then ancestors, then the bunch."""
        from takler.core.params import find_parameter

        return find_parameter(self, name)  # type: ignore[arg-type]

    def all_parameters(self) -> dict[str, tuple[ParamValue, str, str]]:
        """Every visible parameter: name -> (value, origin, defining path)."""
        from takler.core.params import all_parameters

        return all_parameters(self)  # type: ignore[arg-type]

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
        self._attribute_added(name, _attribute_data(event))
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
        self._attribute_added(name, _attribute_data(meter))
        return meter

    def add_label(self, name: str, text: str = "") -> Label:
        check_name(name, "label name")
        self._check_free_attr(name)
        label = Label(name=name, default=str(text), value=str(text))
        self.labels = _with(self.labels, name, label)
        self._attribute_added(name, _attribute_data(label))
        return label

    def _attribute_added(self, name: str, data: dict[str, Any]) -> None:
        # A node being built records nothing; on an attached one, the flow's
        # definition changed: the store writes it again, subscribers learn it.
        if self.bunch is not None:
            self._commit([Change(self.node_path, ChangeKind.attribute, name, None, data)])

    def delete_attribute(self, kind: str, name: str) -> list[Change]:
        """Delete an event, meter or label (ecFlow ``alter delete``).

        Raises:
            AttributeNotFoundError: no such attribute here.
            InvalidValueError: an unknown kind, or a trigger or complete
                expression reads it (change that first).
        """
        found: Event | Meter | Label
        if kind == "event":
            found = self.find_event(name)
        elif kind == "meter":
            found = self.find_meter(name)
        elif kind == "label":
            found = self.find_label(name)
        else:
            raise InvalidValueError(f"can delete an event, meter or label, not a {kind!r}")
        change = Change(self.node_path, ChangeKind.attribute, found.name, _attribute_data(found), None)
        bunch = self.bunch
        if bunch is not None and kind != "label":  # no expression reads a label
            # Those the deletion would wake are those that read it (by name or number).
            users = sorted(u.node_path for u in bunch.dependents(change))
            if users:
                raise InvalidValueError(
                    f"{self.node_path}: {kind} {found.name} is read by the expressions of"
                    f" {', '.join(users[:3])}{' ...' if len(users) > 3 else ''}; change those first"
                )
        table = {"event": "events", "meter": "meters", "label": "labels"}[kind]
        own = dict(getattr(self, table))
        del own[found.name]
        setattr(self, table, own)
        return self._commit([change])

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
            bunch._index_node(self)  # type: ignore[arg-type]
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
        bunch._unindex_node(self)  # type: ignore[arg-type]
        setattr(self, attr_name, new)
        bunch._index_node(self)  # type: ignore[arg-type]
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

    def set_repeat_value(self, text: str) -> list[Change]:
        """Make ``text`` the repeat's current value (ecFlow ``alter change repeat``).

        Raises:
            AttributeNotFoundError: the node has no repeat.
            RepeatError: ``text`` is not one of its values.
        """
        repeat = self.repeat
        if repeat is None:
            raise AttributeNotFoundError(f"{self.node_path}: no repeat")
        old, was_expired = repeat.index, repeat.expired
        repeat.set_value(str(text))
        if repeat.index == old and not was_expired:
            return []
        return self._commit([Change(self.node_path, ChangeKind.repeat, repeat.name, old, repeat.index)])

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
