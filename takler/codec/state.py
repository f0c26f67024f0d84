"""Load of a node's run-time state: a setter per state key, checked, by node kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from takler.codec.base import (
    _FLOW_STATE,
    _KINDS,
    _TASK_STATE,
    _bool,
    _datetime,
    _dict,
    _int,
    _list,
    _Located,
    _opt_str,
    _set_attr_state,
    _status,
    _str,
)
from takler.core.errors import TaklerError
from takler.core.node import Node
from takler.core.status import NodeStatus


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
