"""The ``alter`` command: add, change or delete a node's attributes."""

from __future__ import annotations

from typing import Any

from takler.core.bunch import Bunch
from takler.core.errors import InvalidValueError
from takler.core.node import Node

_KINDS = ("variable", "meter", "event", "label", "limit", "repeat", "trigger", "complete")


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidValueError(f"{what} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{what} must be an integer, not {value!r}") from None


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() not in ("clear", "0", "false", "")
    return bool(value)


def _add_attribute(node: Node, kind: str, name: str, value: Any) -> None:
    """Add an event (``value``: its initial value), a meter (``value``: "MIN MAX
    [THRESHOLD]", a list, or an object with minimum, maximum, threshold) or a
    label (``value``: its text)."""
    if kind == "event":
        node.add_event(int(name) if name.isdigit() else name, initial=_flag(value))
    elif kind == "meter":
        bounds: Any
        if isinstance(value, dict):
            bounds = [value.get("minimum"), value.get("maximum")]
            if value.get("threshold") is not None:
                bounds.append(value["threshold"])
        else:
            bounds = value.split() if isinstance(value, str) else value
        if not isinstance(bounds, list | tuple) or len(bounds) not in (2, 3):
            raise InvalidValueError(
                f"alter add meter {name}: value must be 'MIN MAX' or 'MIN MAX THRESHOLD'"
            )
        numbers = [_int(v, f"meter {name} bounds") for v in bounds]
        node.add_meter(name, *numbers)
    else:
        if isinstance(value, dict | list):
            raise InvalidValueError(f"alter add label {name}: value must be its text")
        node.add_label(name, "" if value is None else str(value))


def alter(bunch: Bunch, node: Node, args: dict[str, Any]) -> None:
    """Apply one ``alter`` request to ``node``.

    Raises:
        InvalidValueError: unknown action or kind, or a bad value (nothing changed).
    """
    action = args.get("action")
    if action is None:  # not given, or null
        action = "change"
    kind = args.get("kind")
    name = args.get("name")
    value = args.get("value")
    if action not in ("add", "change", "delete"):
        raise InvalidValueError(f"alter: action must be add, change or delete, not {action!r}")
    if kind not in _KINDS:
        raise InvalidValueError(f"alter: kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    if kind in ("trigger", "complete"):
        if action == "delete":
            node.replace_expression(kind, None)
        else:
            if not isinstance(value, str):
                raise InvalidValueError(f"alter {kind}: value must be an expression")
            node.replace_expression(kind, value)
        return
    if kind == "repeat":
        if action != "change":
            raise InvalidValueError("alter repeat: only change is supported (define repeats in the flow)")
        if value is None or isinstance(value, dict | list | bool):
            raise InvalidValueError("alter repeat: value must be one of the repeat's values")
        if name is not None and node.repeat is not None and name != node.repeat.name:
            raise InvalidValueError(f"{node.node_path}: its repeat is {node.repeat.name}, not {name}")
        node.set_repeat_value(str(value))
        return
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f"alter {kind}: a name is needed")
    if kind == "variable":
        if action == "delete":
            node.delete_parameter(name)
        elif action == "add" and name in node.parameters:
            raise InvalidValueError(f"{node.node_path}: variable {name} exists (use change)")
        else:
            if value is None or isinstance(value, dict | list):
                raise InvalidValueError(f"alter variable {name}: value must be a string or number")
            node.set_parameter(name, value)
        return
    if action == "delete" and kind != "limit":
        node.delete_attribute(kind, name)
        return
    if action == "add" and kind != "limit":
        _add_attribute(node, kind, name, value)
        return
    if action != "change":
        raise InvalidValueError("alter limit: only change is supported (define limits in the flow)")
    if kind == "meter":
        node.set_meter(name, _int(value, f"meter {name}"))
    elif kind == "event":
        node.set_event(name, _flag(value))
    elif kind == "label":
        node.set_label(name, "" if value is None else str(value))
    elif kind == "limit":
        node.set_limit_max(name, _int(value, f"limit {name}"))
