"""Load: flows and bunches from their dumps, node by node (a loader per
definition key; the state keys are set by :mod:`takler.codec.state`); the
upgrade of older schemas."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from takler.codec.base import (
    _BELOW,
    _KEYS,
    _KINDS,
    _SCALAR_STATE,
    SCHEMA,
    _complete,
    _datetime,
    _dict,
    _events,
    _ExprData,
    _inlimits,
    _labels,
    _late,
    _limits,
    _Located,
    _meters,
    _split_attr_state,
    _status,
    _str,
    _trigger,
)
from takler.codec.state import _apply_state
from takler.core.attributes import check_name
from takler.core.bunch import Bunch, gc_paused
from takler.core.errors import CodecError, DuplicateNameError, TaklerError
from takler.core.expression import parse_expression
from takler.core.node import Family, Flow, Node, Task, _param_value

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
