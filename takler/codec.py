"""The codec: bunches, flows and changes to plain JSON-able dicts and JSON text, and back.

A node is ``{"kind", "name", definition keys..., state keys..., "children"}``
(the "Data format of a bunch" in the project's interfaces). Rules:

* Dumps omit a key whose value is None, an empty list or an empty dict;
  loading reads a missing key as that default. Booleans, zeros and empty
  strings are always written.
* ``state=False`` gives a pure definition (what a client loads);
  ``state=True`` adds run-time state; ``secrets=True`` adds task passwords.
* Loading builds each node through the model's own methods (``add_event``,
  ``add_limit``...) so every check of the model applies; where a new node
  needs none of them (a trigger, children already checked here) it takes the
  model's unchecked path (``_put_expr``, ``_adopt_children``). Then it sets
  the state fields directly. ``"kind"`` is looked up in a fixed table: data never
  names code. Any problem raises :class:`CodecError` naming the node path and
  the field, and nothing half-built is returned.
* Schema 1 is current. Schema 0 (no ``"schema"`` key; each node's ``"status"``
  held what schema 1 calls its status, a task's real one, with suspension
  only in ``"suspended"``; no ``"flags"`` or ``"late"``) is upgraded on load.
* The store keeps a node's state apart from its flow's definition:
  :func:`dump_node_state` gives that compact state (which also omits False
  flags) and ``load_flow(definition, states=...)`` puts it back. A limit's
  maximum is part of that state too, since operators alter it at run time.
* Times are naive, in the flow clock, as ISO 8601 text.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.preconf.json import make_converter

from takler.core.attributes import check_name
from takler.core.bunch import Bunch, gc_paused
from takler.core.change import Change
from takler.core.errors import CodecError, DuplicateNameError, TaklerError
from takler.core.expression import format_expression, parse_expression
from takler.core.node import Family, Flow, Node, Task, _param_value
from takler.core.status import NodeStatus

__all__ = [
    "FRESH_TASK_STATE",
    "FRESH_TASK_STATE_TEXT",
    "SCHEMA",
    "dump_bunch",
    "dump_change",
    "dump_node",
    "dump_node_state",
    "dumps",
    "load_bunch",
    "load_flow",
    "loads",
]

SCHEMA = 1
_KINDS: dict[str, type[Node]] = {"flow": Flow, "family": Family, "task": Task}
_BELOW = ("family", "task")
_COMMON = frozenset(
    "kind name state suspended defstatus parameters events meters labels limits inlimits"
    " trigger complete repeat times late autocancel state_since flags".split()
)
_TASK_STATE = ("status", "tryno", "password", "rid", "job", "reason", "submitted_at", "active_at")
_FLOW_STATE = ("begun", "begun_at")
_KEYS: dict[str, frozenset[str]] = {
    "task": _COMMON | set(_TASK_STATE),
    "family": _COMMON | {"children"},
    "flow": _COMMON | {"children", "clock", *_FLOW_STATE},
}
_SCALAR_STATE = frozenset({"suspended", "state_since", "flags", *_TASK_STATE, *_FLOW_STATE})


def _strict(kind: type, what: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {what}, got {value!r}")
        return value

    return hook


_converter = make_converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, _strict(int, "an integer"))
_converter.register_structure_hook(bool, _strict(bool, "true or false"))
_converter.register_structure_hook(str, _strict(str, "a string"))


# Records inside a node, structured by the converter.
@attrs.frozen
class _EventData:
    name: str
    number: int | None = None
    initial: bool = False
    value: bool | None = None


@attrs.frozen
class _MeterData:
    name: str
    minimum: int
    maximum: int
    threshold: int | None = None
    value: int | None = None


@attrs.frozen
class _LabelData:
    name: str
    default: str = ""
    value: str | None = None


@attrs.frozen
class _LimitData:
    name: str
    maximum: int
    holders: dict[str, int] | None = None


@attrs.frozen
class _InLimitData:
    name: str
    path: str = ""
    tokens: int = 1
    node_only: bool = False
    submission_only: bool = False


@attrs.frozen
class _ExprData:
    text: str
    freed: bool | None = None


@attrs.frozen
class _LateData:
    text: str


class _Located(ValueError):
    """A problem whose message already names the field."""


def _structurer(kind: Any, field: str) -> Callable[[Any], Any]:
    """A strict structure function for the records of ``field`` (a list or one object)."""
    hook = _converter.get_structure_hook(kind)
    container, what = (
        (list, "a list") if getattr(kind, "__origin__", None) is list else (dict, "an object")
    )

    def structure(value: Any) -> Any:
        if type(value) is not container:
            raise _Located(f"{field}: expected {what}, got {type(value).__name__}")
        try:
            return hook(value, kind)
        except cattrs.BaseValidationError as e:
            raise _Located("; ".join(cattrs.transform_error(e, path=field))) from None

    return structure


_events = _structurer(list[_EventData], "events")
_meters = _structurer(list[_MeterData], "meters")
_labels = _structurer(list[_LabelData], "labels")
_limits = _structurer(list[_LimitData], "limits")
_inlimits = _structurer(list[_InLimitData], "inlimits")
_trigger = _structurer(_ExprData, "trigger")
_complete = _structurer(_ExprData, "complete")
_late = _structurer(_LateData, "late")


# ---------------------------------------------------------------- scalar checks


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def _int(v: Any, low: int = 0) -> int:
    if type(v) is not int or v < low:
        raise TypeError(f"expected an integer >= {low}, got {v!r}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _opt_str(v: Any) -> str | None:
    return None if v is None else _str(v)


def _list(v: Any) -> list[Any]:
    if type(v) is not list:
        raise TypeError(f"expected a list, got {type(v).__name__}")
    return v


def _dict(v: Any) -> dict[str, Any]:
    if type(v) is not dict:
        raise TypeError(f"expected an object, got {type(v).__name__}")
    return v


def _datetime(v: Any) -> dt.datetime | None:
    if v is None:
        return None
    try:
        value = dt.datetime.fromisoformat(_str(v))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 date and time, got {v!r}") from None
    if value.tzinfo is not None:
        raise ValueError(f"expected a time in the flow clock, without a zone, got {v!r}")
    return value


def _iso(v: dt.datetime | None) -> str | None:
    return None if v is None else v.isoformat()


_STATUSES = {s.value: s for s in NodeStatus}


def _status(v: Any) -> NodeStatus:
    status = _STATUSES.get(v) if type(v) is str else None
    if status is None:
        raise ValueError(f"unknown state {v!r}; expected one of {', '.join(_STATUSES)}")
    return status


# ---------------------------------------------------------------- attribute state fields

_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _state_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    """The run-time state fields (metadata ``state``) of a repeat or time attribute class."""
    fields = _FIELDS.get(cls)
    if fields is None:
        attrs.resolve_types(cls)
        fields = tuple((f.name, f.type) for f in attrs.fields(cls) if f.metadata.get("state"))
        _FIELDS[cls] = fields
    return fields


def _dump_attr_state(attr: Any, out: dict[str, Any]) -> dict[str, Any]:
    for name, _ in _state_fields(type(attr)):
        value = getattr(attr, name)
        if value is not None:
            out[name] = value if type(value) in (bool, int, str) else _converter.unstructure(value)
    return out


def _split_attr_state(attr: Any, data: dict[str, Any], field: str, known: set[str]) -> dict:
    """The state fields of ``data`` for ``attr``; any key not in ``known`` or a field is an error."""
    names = {name for name, _ in _state_fields(type(attr))}
    extra = data.keys() - known - names
    if extra:
        raise _Located(f"{field}: unknown key(s) {', '.join(sorted(extra))}")
    return {k: v for k, v in data.items() if k in names}


def _set_attr_state(attr: Any, state: Any, where: str = "") -> None:
    types = dict(_state_fields(type(attr)))
    for name, value in _dict(state).items():
        if name not in types:
            raise ValueError(f"{where}{name}: not a state field of a {attr.kind}")
        try:
            setattr(attr, name, _converter.structure(value, types[name]))
        except cattrs.BaseValidationError as e:
            raise ValueError(f"{where}{name}: " + "; ".join(cattrs.transform_error(e))) from None
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}{name}: {e}") from None


# ---------------------------------------------------------------- dump


# Expression trees are immutable and shared between nodes with the same text.
_expr_text = functools.lru_cache(maxsize=1 << 16)(format_expression)


def _dump(node: Node, secrets: bool, state: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": node.kind, "name": node.name}
    is_task = isinstance(node, Task)
    if state:
        suspended = node.suspended
        status = node._status if is_task else node.status  # type: ignore[attr-defined]
        # ``_value_``, a plain attribute: ``.value`` is a slow descriptor in a hot loop.
        d["state"] = "suspended" if suspended else status._value_
        d["suspended"] = suspended
    if node.defstatus is not None:
        d["defstatus"] = node.defstatus.value
    if node.parameters:
        d["parameters"] = dict(node.parameters)
    if node.events:
        d["events"] = [_dump_event(e, state) for e in node.events.values()]
    if node.meters:
        d["meters"] = [_dump_meter(m, state) for m in node.meters.values()]
    if node.labels:
        d["labels"] = [
            {"name": la.name, "default": la.default, "value": la.value}
            if state
            else {"name": la.name, "default": la.default}
            for la in node.labels.values()
        ]
    if node.limits:
        d["limits"] = [
            {"name": li.name, "maximum": li.maximum, "holders": dict(li.holders)}
            if state and li.holders
            else {"name": li.name, "maximum": li.maximum}
            for li in node.limits.values()
        ]
    if node.inlimits:
        d["inlimits"] = [
            {"name": i.name, "path": i.path, "tokens": i.tokens, "node_only": i.node_only,
             "submission_only": i.submission_only}
            for i in node.inlimits
        ]  # fmt: skip
    trigger = node.trigger
    if trigger is not None:
        text = _expr_text(trigger.expr)
        d["trigger"] = {"text": text, "freed": trigger.freed} if state else {"text": text}
    if node.complete_expr is not None:
        text = _expr_text(node.complete_expr.expr)
        d["complete"] = (
            {"text": text, "freed": node.complete_expr.freed} if state else {"text": text}
        )
    if node.repeat is not None:
        repeat = node.repeat
        d["repeat"] = {"text": repeat.to_text()}
        if state:
            _dump_attr_state(repeat, d["repeat"])["value"] = repeat.value
    if node.times:
        d["times"] = [
            _dump_attr_state(t, {"kind": t.kind, "text": t.to_text()})
            if state
            else {"kind": t.kind, "text": t.to_text()}
            for t in node.times
        ]
    if node.late is not None:
        d["late"] = {"text": node.late.to_text()}
    if node.autocancel is not None:
        d["autocancel"] = node.autocancel
    if state:
        if node.state_since is not None:
            d["state_since"] = node.state_since.isoformat()
        if node.flags:
            d["flags"] = sorted(node.flags)
    if is_task:
        if state:
            d["status"] = status._value_
            d["tryno"] = node.tryno  # type: ignore[attr-defined]
            _task_extras(node, d, secrets)  # type: ignore[arg-type]
        return d
    assert isinstance(node, Family)
    if isinstance(node, Flow):
        if state:
            d["begun"] = node.begun
            if node.begun_at is not None:
                d["begun_at"] = node.begun_at.isoformat()
        if node.clock is not None:
            d["clock"] = node.clock
    if node.children:
        d["children"] = [_dump(c, secrets, state) for c in node.children]
    return d


def _dump_event(e: Any, state: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": e.name}
    if e.number is not None:
        d["number"] = e.number
    d["initial"] = e.initial
    if state:
        d["value"] = e.value
    return d


def _dump_meter(m: Any, state: bool) -> dict[str, Any]:
    d = {"name": m.name, "minimum": m.minimum, "maximum": m.maximum}
    if m.threshold is not None:
        d["threshold"] = m.threshold
    if state:
        d["value"] = m.value
    return d


def _task_extras(task: Task, d: dict[str, Any], secrets: bool) -> None:
    if task.job is None and task.rid is None and task.reason is None:
        # A task that never ran (most of a big flow) has none of the fields below.
        if task.submitted_at is None and task.active_at is None and task.password is None:
            return
    if secrets and task.password is not None:
        d["password"] = task.password
    if task.rid is not None:
        d["rid"] = task.rid
    if task.job is not None:
        d["job"] = dict(task.job)
    if task.reason is not None:
        d["reason"] = task.reason
    if task.submitted_at is not None:
        d["submitted_at"] = task.submitted_at.isoformat()
    if task.active_at is not None:
        d["active_at"] = task.active_at.isoformat()


def dump_node(node: Node, *, secrets: bool = False, state: bool = True) -> dict[str, Any]:
    """The node and its subtree as data; ``state=False`` gives a pure definition."""
    with gc_paused():
        return _dump(node, secrets, state)


def dump_bunch(bunch: Bunch, *, secrets: bool = False, state: bool = True) -> dict[str, Any]:
    """The whole bunch as data: ``{"schema", "parameters", "now", "flows"}``."""
    return {
        "schema": SCHEMA,
        "parameters": dict(bunch.parameters),
        "now": _iso(bunch.now),
        "flows": [dump_node(f, secrets=secrets, state=state) for f in bunch.flows.values()],
    }


def dump_node_state(node: Node, *, secrets: bool = True) -> dict[str, Any]:
    """The node's own run-time state (no children), as the store keeps it."""
    s: dict[str, Any] = {}
    if node.suspended:
        s["suspended"] = True
    if node.state_since is not None:
        s["state_since"] = node.state_since.isoformat()
    if node.flags:
        s["flags"] = sorted(node.flags)
    if node.events:
        s["events"] = {e.name: e.value for e in node.events.values()}
    if node.meters:
        s["meters"] = {m.name: m.value for m in node.meters.values()}
    if node.labels:
        s["labels"] = {la.name: la.value for la in node.labels.values()}
    if node.limits:
        s["limits"] = {
            li.name: {"maximum": li.maximum, "holders": dict(li.holders)}
            if li.holders
            else {"maximum": li.maximum}
            for li in node.limits.values()
        }
    if node.trigger is not None and node.trigger.freed:
        s["trigger_freed"] = True
    if node.complete_expr is not None and node.complete_expr.freed:
        s["complete_freed"] = True
    if node.repeat is not None:
        s["repeat"] = _dump_attr_state(node.repeat, {})
    if node.times:
        s["times"] = [_dump_attr_state(t, {}) for t in node.times]
    if isinstance(node, Task):
        s["status"] = node._status.value
        s["tryno"] = node.tryno
        _task_extras(node, s, secrets)
    elif isinstance(node, Flow):
        s["begun"] = node.begun
        if node.begun_at is not None:
            s["begun_at"] = node.begun_at.isoformat()
    return s


def is_fresh_task(node: Node) -> bool:
    """Whether ``dump_node_state(node)`` equals FRESH_TASK_STATE: a task as
    built from its definition, never run (or put back in exactly that state).

    It reads exactly the fields dump_node_state reads, without building the
    dict (most of a big flow is such tasks, and a whole-flow save asks of
    each). A state field added to dump_node_state must be added here; the
    test suite checks the two agree for each field of a Task.
    Running tasks fail on the first test.
    """
    if not isinstance(node, Task) or node._status is not NodeStatus.unknown or node.tryno != 0:
        return False
    trigger, complete = node.trigger, node.complete_expr
    return not (
        node.suspended
        or node.state_since is not None
        or node.flags
        or node.events
        or node.meters
        or node.labels
        or node.limits
        or (trigger is not None and trigger.freed)
        or (complete is not None and complete.freed)
        or node.repeat is not None
        or node.times
        or node.password is not None
        or node.rid is not None
        or node.job is not None
        or node.reason is not None
        or node.submitted_at is not None
        or node.active_at is not None
    )


def _jsonable(value: Any) -> Any:
    if value is None or type(value) in (str, int, bool, float):
        return value
    return _converter.unstructure(value)


def dump_change(change: Change) -> dict[str, Any]:
    """A change as data: ``{"path", "kind", "name", "old", "new"}``."""
    return {
        "path": change.path,
        "kind": change.kind.value,
        "name": change.name,
        "old": _jsonable(change.old),
        "new": _jsonable(change.new),
    }


# ---------------------------------------------------------------- load: definition


def _text(data: dict[str, Any], field: str) -> str:
    text = data.get("text")
    if type(text) is not str:
        raise _Located(f"{field}.text: expected a string, got {text!r}")
    return text


def _load_parameters(node: Node, value: Any, st: dict) -> None:
    # add_parameter's checks without its change record: the node is new, and a
    # JSON object has no two keys alike (the key check comes first, as there).
    parameters = node.parameters
    for name, v in _dict(value).items():
        parameters[check_name(name, "parameter name")] = _param_value(name, v)


def _load_events(node: Node, value: Any, st: dict) -> None:
    for r in _events(value):
        node.add_event(r.name, r.number, r.initial)
        if r.value is not None:
            st.setdefault("events", {})[r.name] = r.value


def _load_meters(node: Node, value: Any, st: dict) -> None:
    for r in _meters(value):
        node.add_meter(r.name, r.minimum, r.maximum, r.threshold)
        if r.value is not None:
            st.setdefault("meters", {})[r.name] = r.value


def _load_labels(node: Node, value: Any, st: dict) -> None:
    for r in _labels(value):
        node.add_label(r.name, r.default)
        if r.value is not None:
            st.setdefault("labels", {})[r.name] = r.value


def _load_limits(node: Node, value: Any, st: dict) -> None:
    for r in _limits(value):
        node.add_limit(r.name, r.maximum)
        if r.holders:
            st.setdefault("limits", {})[r.name] = {"holders": r.holders}


def _load_inlimits(node: Node, value: Any, st: dict) -> None:
    for r in _inlimits(value):
        spec = f"{r.path}:{r.name}" if r.path else r.name
        node.add_in_limit(spec, r.tokens, r.node_only, r.submission_only)


_EXPR_KEYS = frozenset({"text", "freed"})


def _expr_data(value: Any, structure: Callable[[Any], _ExprData]) -> tuple[str, Any]:
    """(text, freed) of an expression record; checked by hand when well formed
    (the common case, and ten times faster), else by ``structure`` for its message."""
    if type(value) is dict and value.keys() <= _EXPR_KEYS:
        text, freed = value.get("text"), value.get("freed")
        if type(text) is str and (freed is None or type(freed) is bool):
            return text, freed
    r = structure(value)
    return r.text, r.freed


def _load_trigger(node: Node, value: Any, st: dict) -> None:
    text, freed = _expr_data(value, _trigger)
    # add_trigger, for a new node (no trigger yet) outside any bunch, as _put_expr does it.
    node._put_expr("trigger", parse_expression(text))
    if freed is not None:
        st["trigger_freed"] = freed


def _load_complete(node: Node, value: Any, st: dict) -> None:
    text, freed = _expr_data(value, _complete)
    node._put_expr("complete", parse_expression(text))
    if freed is not None:
        st["complete_freed"] = freed


def _load_repeat(node: Node, value: Any, st: dict) -> None:
    data = _dict(value)
    repeat = node.add_repeat(_text(data, "repeat"))
    state = _split_attr_state(repeat, data, "repeat", {"text", "value"})
    if state:
        st["repeat"] = state


_TIME_ADDERS: dict[str, Callable[[Node, str], Any]] = {
    "time": Node.add_time,
    "today": Node.add_today,
    "date": Node.add_date,
    "day": Node.add_day,
    "cron": Node.add_cron,
}


def _load_times(node: Node, value: Any, st: dict) -> None:
    if type(value) is not list:
        raise _Located(f"times: expected a list, got {type(value).__name__}")
    states = []
    for i, item in enumerate(value):
        field = f"times[{i}]"
        data = _dict(item)
        kind = data.get("kind")
        add = _TIME_ADDERS.get(kind) if type(kind) is str else None
        if add is None:
            raise _Located(f"{field}.kind: expected one of {', '.join(_TIME_ADDERS)}, got {kind!r}")
        attr = add(node, _text(data, field))
        states.append(_split_attr_state(attr, data, field, {"kind", "text"}))
    if any(states):
        st["times"] = states


def _load_late(node: Node, value: Any, st: dict) -> None:
    node.add_late(_late(value).text)


def _load_defstatus(node: Node, value: Any, st: dict) -> None:
    node.set_defstatus(_str(value))


def _load_autocancel(node: Node, value: Any, st: dict) -> None:
    node.autocancel = _str(value)


def _load_clock(node: Node, value: Any, st: dict) -> None:
    assert isinstance(node, Flow)
    node.clock = _str(value)


_DEFINITION: dict[str, Callable[[Node, Any, dict], None]] = {
    "defstatus": _load_defstatus,
    "parameters": _load_parameters,
    "events": _load_events,
    "meters": _load_meters,
    "labels": _load_labels,
    "limits": _load_limits,
    "inlimits": _load_inlimits,
    "trigger": _load_trigger,
    "complete": _load_complete,
    "repeat": _load_repeat,
    "times": _load_times,
    "late": _load_late,
    "autocancel": _load_autocancel,
    "clock": _load_clock,
}

# ---------------------------------------------------------------- load: state


def _set_values(attr: str, check: Callable[[Any, Any], Any]) -> Callable[[Node, Any], None]:
    """A setter of ``value`` on each named event, meter or label."""

    def setter(node: Node, value: Any) -> None:
        table = getattr(node, attr)
        for name, v in _dict(value).items():
            item = table.get(name)
            if item is None:
                raise ValueError(f"no {attr[:-1]} {name!r}")
            item.value = check(item, v)

    return setter


def _set_limits(node: Node, value: Any) -> None:
    for name, data in _dict(value).items():
        limit = node.limits.get(name)
        if limit is None:
            raise ValueError(f"no limit {name!r}")
        extra = _dict(data).keys() - {"maximum", "holders"}
        if extra:
            raise ValueError(f"{name}: unknown key(s) {', '.join(sorted(extra))}")
        if "maximum" in data:
            limit.maximum = _int(data["maximum"])
        holders = _dict(data.get("holders") or {})
        limit.holders = {_str(path): _int(tokens, 1) for path, tokens in holders.items()}


def _set_freed(attr: str) -> Callable[[Node, Any], None]:
    def setter(node: Node, value: Any) -> None:
        expr = getattr(node, attr)
        if expr is None:
            raise ValueError(f"the node has no {attr.removesuffix('_expr')}")
        expr.freed = _bool(value)

    return setter


def _set_repeat(node: Node, value: Any) -> None:
    repeat = node.repeat
    if repeat is None:
        raise ValueError("the node has no repeat")
    _set_attr_state(repeat, value)
    count = repeat.count
    if repeat.index < 0 or (count is not None and repeat.index >= count):
        raise ValueError(f"index {repeat.index} is out of range")


def _set_times(node: Node, value: Any) -> None:
    if type(value) is not list or len(value) != len(node.times):
        raise ValueError(f"expected a list of {len(node.times)} time states")
    for i, (attr, state) in enumerate(zip(node.times, value, strict=True)):
        _set_attr_state(attr, state, f"[{i}].")


def _task_status(value: Any) -> NodeStatus:
    status = _status(value)
    if status is NodeStatus.suspended:
        raise ValueError("a task's status is never suspended (that is the suspended flag)")
    return status


def _set(attr: str, check: Callable[[Any], Any]) -> Callable[[Node, Any], None]:
    return lambda node, value: setattr(node, attr, check(value))


_STATE: dict[str, Callable[[Node, Any], None]] = {
    "suspended": _set("suspended", _bool),
    "state_since": _set("state_since", _datetime),
    "flags": _set("flags", lambda v: {_str(f) for f in _list(v)}),
    "events": _set_values("events", lambda _, v: _bool(v)),
    "meters": _set_values("meters", lambda meter, v: meter.check(v)),
    "labels": _set_values("labels", lambda _, v: _str(v)),
    "limits": _set_limits,
    "trigger_freed": _set_freed("trigger"),
    "complete_freed": _set_freed("complete_expr"),
    "repeat": _set_repeat,
    "times": _set_times,
    "status": _set("_status", _task_status),
    "tryno": _set("tryno", _int),
    "password": _set("password", _opt_str),
    "rid": _set("rid", _opt_str),
    "job": _set("job", lambda v: None if v is None else dict(_dict(v))),
    "reason": _set("reason", _opt_str),
    "submitted_at": _set("submitted_at", _datetime),
    "active_at": _set("active_at", _datetime),
    "begun": _set("begun", _bool),
    "begun_at": _set("begun_at", _datetime),
}


_STATE_OF: dict[str, dict[str, Callable[[Node, Any], None]]] = {
    kind: {
        k: v
        for k, v in _STATE.items()
        if (k not in _TASK_STATE or kind == "task") and (k not in _FLOW_STATE or kind == "flow")
    }
    for kind in _KINDS
}


def _apply_state(node: Node, kind: str, st: Mapping[str, Any]) -> None:
    setters = _STATE_OF[kind]
    for key, value in st.items():
        setter = setters.get(key)
        if setter is None:
            raise _Located(f"{key}: not a state field of a {kind}")
        try:
            setter(node, value)
        except (TaklerError, ValueError, TypeError) as e:
            raise _Located(f"{key}: {e}") from None


# ---------------------------------------------------------------- load: tree

_States = Mapping[str, Mapping[str, Any]] | None


def _build(
    data: Any,
    parent: str,
    where: str | int,
    kinds: tuple[str, ...],
    states: _States,
    paths: dict[str, Node],
) -> Node:
    """The node of ``data`` below ``parent`` (a path); ``where`` names the data
    in messages: a text, or the index of the child in ``parent``'s children.
    Each node built goes into ``paths`` by its path, parents first."""
    if type(data) is not dict:
        where = _where(parent, where)
        raise CodecError(f"{where}: expected a node object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in kinds:
        where = _where(parent, where)
        raise CodecError(f"{where}: kind: expected {' or '.join(kinds)}, got {kind!r}")
    name = data.get("name")
    if type(name) is not str:
        where = _where(parent, where)
        raise CodecError(f"{where}: name: expected a string, got {name!r}")
    path = f"{parent}/{name}"
    if not _KEYS[kind].issuperset(data):
        extra = data.keys() - _KEYS[kind]
        raise CodecError(f"{path}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
    field = "name"
    st: dict[str, Any] = {}
    try:
        node = _KINDS[kind](name)
        paths[path] = node
        for key, value in data.items():
            if value is None:
                continue
            load = _DEFINITION.get(key)  # None for a state key, or kind, name...
            if load is not None:
                field = key
                load(node, value, st)
            elif key in _SCALAR_STATE:
                st[key] = value
        children = data.get("children")
        if children is not None:
            field = "children"
            assert isinstance(node, Family)
            if type(children) is not list:
                raise TypeError(f"expected a list, got {type(children).__name__}")
            built: list[Node] = []
            names: set[str] = set()
            for i, child_data in enumerate(children):
                child = _build(child_data, path, i, _BELOW, states, paths)
                if child.name in names:
                    field = f"children[{i}]"
                    raise DuplicateNameError(f"a child named {child.name} already exists")
                names.add(child.name)
                built.append(child)
            # New nodes of unique names: add_children's checks hold already.
            # Children carry their state already: the family derives its own once.
            node._adopt_children(built)
        field = "state"
        if states is not None and path in states:
            st.update(_dict(states[path]))
        if st:
            _apply_state(node, kind, st)
        claimed = data.get("state")
        if claimed is not None:
            claimed_state = _status(claimed)
            # A family's state is derived, so only a task's can disagree with the data.
            if isinstance(node, Task) and claimed_state is not node.state:
                raise ValueError(
                    f"{claimed!r} does not match status {node._status.value!r}"
                    f"{' and suspended' if node.suspended else ''}"
                )
    except CodecError:
        raise
    except _Located as e:
        raise CodecError(f"{path}: {e}") from None
    except (TaklerError, ValueError, TypeError) as e:
        raise CodecError(f"{path}: {field}: {e}") from None
    return node


def _where(parent: str, where: str | int) -> str:
    return f"{parent}/children[{where}]" if type(where) is int else str(where)


def load_flow(data: Any, *, states: _States = None, paths: dict[str, Node] | None = None) -> Flow:
    """Build a detached Flow from a flow dump, with or without state.

    Args:
        data: a node dump of kind ``flow``.
        states: per-node state dicts by path (from :func:`dump_node_state`),
            applied over any state in ``data``.
        paths: an empty dict to fill with each node of the flow by its path,
            parents first: :meth:`Flow.check` and :meth:`Bunch.add_flow` take
            it (while the tree is unchanged) rather than walk the flow again.

    Raises:
        CodecError: the data is not a valid flow; the message names the path and field.
    """
    if paths is None:
        paths = {}
    try:
        with gc_paused(long_lived=True):
            node = _build(data, "", "flow", ("flow",), states, paths)
    except RecursionError:
        raise CodecError("flow: nodes are nested too deep") from None
    assert isinstance(node, Flow)
    return node


def _upgrade_node_0(data: Any) -> Any:
    if type(data) is not dict:
        return data
    out = dict(data)
    status = out.pop("status", None)
    if status is not None:
        if out.get("kind") == "task":
            out["status"] = status
        out["state"] = "suspended" if out.get("suspended") is True else status
    if type(out.get("children")) is list:
        out["children"] = [_upgrade_node_0(c) for c in out["children"]]
    return out


def _upgrade(data: Any) -> dict[str, Any]:
    if type(data) is not dict:
        raise CodecError(f"bunch: expected an object, got {type(data).__name__}")
    schema = data.get("schema", 0)
    if type(schema) is not int or schema < 0:
        raise CodecError(f"bunch: schema: expected a non-negative integer, got {schema!r}")
    if schema > SCHEMA:
        raise CodecError(
            f"bunch: schema: {schema} is newer than this takler reads (up to {SCHEMA}); upgrade takler"
        )
    if schema == 0:
        data = dict(data, schema=1)
        if type(data.get("flows")) is list:
            data["flows"] = [_upgrade_node_0(f) for f in data["flows"]]
    return data


def load_bunch(data: Any, *, states: _States = None) -> Bunch:
    """Build a Bunch from a bunch dump (schema 0 or 1).

    Args:
        data: a bunch dump.
        states: per-node state dicts by path, as for :func:`load_flow`.

    Raises:
        CodecError: the data is not a valid bunch; the message names the path and field.
    """
    data = _upgrade(data)
    extra = data.keys() - {"schema", "parameters", "now", "flows"}
    if extra:
        raise CodecError(f"bunch: unknown key(s) {', '.join(sorted(map(str, extra)))}")
    flows_data = data.get("flows") or []
    if type(flows_data) is not list:
        raise CodecError(f"bunch: flows: expected a list, got {type(flows_data).__name__}")
    bunch = Bunch()
    field = "parameters"
    try:
        with gc_paused(long_lived=True):
            for name, value in _dict(data.get("parameters") or {}).items():
                bunch.set_parameter(check_name(name, "parameter name"), value)
            field = "now"
            now = _datetime(data.get("now"))
            if now is not None:
                bunch.now = now
            for i, flow_data in enumerate(flows_data):
                paths: dict[str, Node] = {}
                flow = _build(flow_data, "", f"flows[{i}]", ("flow",), states, paths)
                field = f"flows[{i}]"
                bunch.add_flow(flow, journal=False, paths=paths)  # type: ignore[arg-type]
    except RecursionError:
        raise CodecError("bunch: nodes are nested too deep") from None
    except CodecError:
        raise
    except (TaklerError, ValueError, TypeError) as e:
        raise CodecError(f"bunch: {field}: {e}") from None
    bunch.drain()
    return bunch


# ---------------------------------------------------------------- JSON text


def dumps(obj: Any) -> str:
    """Compact JSON text of JSON-able data.

    Raises:
        CodecError: the data holds something JSON cannot express (an object,
            an integer beyond 64 bits...). The model refuses NaN and
            infinities on entry, so they never reach here.
    """
    try:
        return orjson.dumps(obj).decode()
    except orjson.JSONEncodeError as e:
        raise CodecError(f"cannot encode as JSON: {e}") from None


def loads(text: str | bytes) -> dict[str, Any]:
    """The JSON object in ``text``.

    Raises:
        CodecError: not valid JSON (the message gives line and column) or not an object.
    """
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise CodecError(f"bad JSON: {e}") from None
    if type(data) is not dict:
        raise CodecError(f"bad JSON: expected an object, got {type(data).__name__}")
    return data


#: The stored state of a task never run (see :func:`dump_node_state`), and its
#: text: the state a task is built in, which a store need not keep.
FRESH_TASK_STATE: dict[str, Any] = dump_node_state(Task("t"))
FRESH_TASK_STATE_TEXT = dumps(FRESH_TASK_STATE)


def _is(cls: type) -> Callable[[Any], bool]:
    return lambda t: isinstance(t, type) and issubclass(t, cls)


# The model's classes hold forward references cattrs cannot resolve: match by predicate.
_converter.register_unstructure_hook_func(_is(Bunch), dump_bunch)
_converter.register_unstructure_hook_func(_is(Node), dump_node)
_converter.register_unstructure_hook_func(_is(Change), dump_change)
_converter.register_structure_hook_func(_is(Bunch), lambda data, _: load_bunch(data))
_converter.register_structure_hook_func(_is(Flow), lambda data, _: load_flow(data))
