"""``takler show``: a subtree and its attributes as text, from a node or bunch dump."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rich.text import Text

from takler_cli.view import STATE_COLOURS, state_style

_ORIGIN = {"user": "user", "generated": "generated", "inherited": "inherited", "server": "server"}


def show_lines(data: Mapping[str, Any], path: str | None = None) -> Iterator[Text]:
    """The lines ``takler show`` prints for ``data`` (a bunch dump or a node dump at ``path``)."""
    if "flows" in data:
        for name, value in sorted((data.get("parameters") or {}).items()):
            yield Text(f"server variable {name} = {_value(value)}", style="dim")
        for flow in data["flows"]:
            yield from _node_lines(flow, "/" + flow["name"], 0)
    else:
        yield from _node_lines(data, path or "/" + str(data.get("name", "")), 0)


def _header(node: Mapping[str, Any], path: str, depth: int) -> Text:
    kind = str(node.get("kind", "task"))
    state = str(node.get("state", "unknown"))
    line = Text("  " * depth)
    line.append(f"{kind} ", style="dim")
    line.append(path if depth == 0 else str(node.get("name")), style="bold")
    line.append("  ")
    line.append(f" {state} ", style=state_style(state))
    if kind == "task":
        tryno = node.get("tryno") or 0
        if tryno:
            line.append(f"  try {tryno}")
        status = node.get("status")
        if node.get("suspended") and status:
            line.append(f"  (status {status})", style="dim")
    if kind == "flow":
        line.append("  begun" if node.get("begun") else "  not begun", style="dim")
    flags = node.get("flags") or []
    if flags:
        line.append("  " + " ".join(flags), style="magenta")
    return line


def _node_lines(node: Mapping[str, Any], path: str, depth: int) -> Iterator[Text]:
    yield _header(node, path, depth)
    pad = "  " * (depth + 1)
    for text in _attribute_lines(node):
        yield Text(pad) + text
    for name, info in (node.get("variables") or {}).items():
        origin = _ORIGIN.get(str(info.get("origin")), str(info.get("origin")))
        where = info.get("defined_at")
        source = (
            origin if origin in ("user", "generated") or not where else f"{origin} from {where}"
        )
        line = Text(f"{pad}var {name} = {_value(info.get('value'))}")
        line.append(f"  ({source})", style="dim")
        yield line
    for child in node.get("children") or []:
        yield from _node_lines(child, f"{path}/{child['name']}", depth + 1)


def _attribute_lines(node: Mapping[str, Any]) -> Iterator[Text]:
    if node.get("defstatus"):
        yield Text(f"defstatus {node['defstatus']}")
    if node.get("suspended"):
        yield Text("suspended", style=STATE_COLOURS["suspended"])
    for which in ("trigger", "complete"):
        expr = node.get(which)
        if expr:
            line = Text(f"{which} {expr.get('text')}")
            if expr.get("freed"):
                line.append("  (freed)", style="dim")
            yield line
    for limit in node.get("limits") or []:
        used = sum((limit.get("holders") or {}).values())
        yield Text(f"limit {limit['name']} {used}/{limit.get('maximum')} in use")
    for inlimit in node.get("inlimits") or []:
        where = f"{inlimit['path']}:" if inlimit.get("path") else ""
        tokens = inlimit.get("tokens", 1)
        extra = " node only" if inlimit.get("node_only") else ""
        extra += " submission only" if inlimit.get("submission_only") else ""
        yield Text(
            f"inlimit {where}{inlimit['name']}" + (f" {tokens}" if tokens != 1 else "") + extra
        )
    for event in node.get("events") or []:
        value = event.get("value", event.get("initial", False))
        yield Text(f"event {event['name']}  {'set' if value else 'clear'}")
    for meter in node.get("meters") or []:
        threshold = meter.get("threshold")
        limits = f"{meter.get('minimum')}..{meter.get('maximum')}"
        if threshold is not None:
            limits += f", threshold {threshold}"
        yield Text(f"meter {meter['name']} {meter.get('value', meter.get('minimum'))} ({limits})")
    for label in node.get("labels") or []:
        yield Text(f"label {label['name']} {_value(label.get('value', label.get('default', '')))}")
    repeat = node.get("repeat")
    if repeat:
        state = "expired" if repeat.get("expired") else f"now {repeat.get('value')}"
        yield Text(f"repeat {repeat.get('text')}  ({state})")
    for attr in node.get("times") or []:
        yield Text(f"{attr.get('kind')} {attr.get('text')}")
    late = node.get("late")
    if late:
        yield Text(f"late {late.get('text')}")
    if node.get("autocancel"):
        yield Text(f"autocancel {node['autocancel']}")
    if node.get("state") == "aborted" and node.get("reason"):
        yield Text(f"reason: {node['reason']}", style=STATE_COLOURS["aborted"])
    if node.get("rid"):
        yield Text(f"job {node['rid']}", style="dim")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if (not value or " " in value) else value
    return str(value)
