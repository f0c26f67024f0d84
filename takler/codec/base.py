"""What dump and load share: the schema number and the keys of each node kind;
the strict converter, with the records it structures for load and the
unstructuring dump uses; the scalar checks; the run-time state fields of a
repeat or time attribute.

A table read in a hot loop (the loader's ``_DEFINITION``) lives in the
module whose loop reads it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from takler.core.node import Family, Flow, Node, Task
from takler.core.status import NodeStatus

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


def _jsonable(value: Any) -> Any:
    if value is None or type(value) in (str, int, bool, float):
        return value
    return _converter.unstructure(value)


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
