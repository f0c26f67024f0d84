"""Write flows as an ecFlow definition (.def) that ecFlow itself loads.

Attributes come out in ecFlow's own order. A trigger reference that ecFlow
would resolve to another node than takler does is written as an absolute
path; a reference to a node outside the written flows becomes an ``extern``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from takler.core.bunch import resolve_path
from takler.core.errors import DefinitionError
from takler.core.expression import AttrRef, format_expression, references
from takler.core.node import Family, Flow, Node, Task
from takler.core.status import NodeStatus
from takler.ecflow.defcheck import Finder, Unresolved, rewrite_paths
from takler.ecflow.variables import ECF_TO_TAKLER, SETTABLE

_ECF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*\Z")
_INDEXED_REPEATS = ("enumerated", "string", "datelist")
_TAKLER_TO_ECF = {takler: ecf for ecf, takler in ECF_TO_TAKLER.items() if ecf in SETTABLE}


def _name(name: str, what: str, where: str) -> str:
    if not _ECF_NAME.match(name):
        raise DefinitionError(
            f"{where}: {what} {name!r} is not a valid ecFlow name (letters, digits, '_' and '.')"
        )
    return name


def _quote(value: object) -> str:
    text = (
        value
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )
    if "\n" in text:
        text = text.replace("\n", "\\n")
    return f"'{text}'"


class _Writer:
    def __init__(self, flows: list[Flow], with_state: bool) -> None:
        self.flows = flows
        self.with_state = with_state
        self.finder = Finder(flows, ())
        self.externs: dict[str, None] = {}
        self.lines: list[str] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    def expression(self, node: Node, which: str) -> str | None:
        attr = node.trigger if which == "trigger" else node.complete_expr
        if attr is None:
            return None
        paths: dict[str, str] = {}
        for ref in references(attr.expr):
            name = ref.name if isinstance(ref, AttrRef) else ""
            mine = resolve_path(node, ref.path)
            try:
                theirs = self.finder.find(node, ref.path, name)
            except Unresolved:
                theirs = None
            if isinstance(theirs, Node) and theirs.node_path == mine:
                continue
            if self.finder.absolute(mine) is not None:
                paths[ref.path] = mine
            else:
                self.externs[f"{mine}:{name}" if name else mine] = None
                paths[ref.path] = mine
        expr = rewrite_paths(attr.expr, paths) if paths else attr.expr
        return format_expression(expr)

    def inlimit_spec(self, node: Node, path: str, name: str) -> str:
        if not path:
            return name
        mine = resolve_path(node, path)
        owner = self.finder.absolute(mine)
        if owner is None or name not in owner.limits:
            self.externs[f"{mine}:{name}"] = None
        return f"{mine}:{name}"

    def node(self, node: Node, depth: int) -> None:
        where = node.node_path
        kind = "suite" if isinstance(node, Flow) else "task" if isinstance(node, Task) else "family"
        header = f"{kind} {_name(node.name, kind, where)}"
        if self.with_state:
            header += self.header_state(node)
        self.emit(depth, header)
        d = depth + 1
        if node.defstatus is not None and node.defstatus is not NodeStatus.queued:
            self.emit(d, f"defstatus {node.defstatus.value}")
        if node.late is not None:
            self.emit(d, f"late {node.late.to_text()}")
        for which in ("complete", "trigger"):
            text = self.expression(node, which)
            if text is not None:
                self.emit(d, f"{which} {text}")
        if node.repeat is not None:
            self.emit(d, f"repeat {node.repeat.to_text()}{self.repeat_state(node)}")
        for pname, value in node.parameters.items():
            ecf = _TAKLER_TO_ECF.get(pname)
            if ecf is not None and ecf in node.parameters:
                if str(node.parameters[ecf]) == str(value):
                    continue  # the loader derives it from the ECF_* name again
            elif ecf is not None:
                pname = ecf
            self.emit(d, f"edit {_name(pname, 'variable', where)} {_quote(value)}")
        for limit in node.limits.values():
            self.emit(d, f"limit {_name(limit.name, 'limit', where)} {limit.maximum}")
        for inl in node.inlimits:
            flags = ("-n " if inl.node_only else "") + ("-s " if inl.submission_only else "")
            tokens = f" {inl.tokens}" if inl.tokens != 1 else ""
            self.emit(d, f"inlimit {flags}{self.inlimit_spec(node, inl.path, inl.name)}{tokens}")
        self.attributes(node, d)
        for attr in node.times:
            self.emit(d, f"{attr.kind} {attr.to_text()}")
        if node.autocancel:
            self.emit(d, f"autocancel {node.autocancel}")
        if isinstance(node, Flow) and node.clock:
            self.emit(d, f"clock {node.clock}")
        if isinstance(node, Family):
            for child in node.children:
                self.node(child, d)
        if not isinstance(node, Task):
            self.emit(depth, f"end{kind}")

    def attributes(self, node: Node, d: int) -> None:
        where = node.node_path
        for label in node.labels.values():
            text = label.default.replace("\n", "\\n").replace('"', "'")
            state = ""
            if self.with_state and label.value != label.default:
                state = ' # "{}"'.format(label.value.replace("\n", "\\n").replace('"', "'"))
            self.emit(d, f'label {_name(label.name, "label", where)} "{text}"{state}')
        for meter in node.meters.values():
            spec = f"meter {_name(meter.name, 'meter', where)} {meter.minimum} {meter.maximum}"
            if meter.threshold is not None:
                spec += f" {meter.threshold}"
            if self.with_state and meter.value != meter.minimum:
                spec += f" # {meter.value}"
            self.emit(d, spec)
        for event in node.events.values():
            if event.number is not None and event.name == str(event.number):
                spec = f"event {event.number}"
            elif event.number is not None:
                spec = f"event {event.number} {_name(event.name, 'event', where)}"
            else:
                spec = f"event {_name(event.name, 'event', where)}"
            if event.initial:
                spec += " set"
            if self.with_state and event.value != event.initial:
                spec += " # set" if event.value else " # clear"
            self.emit(d, spec)

    def header_state(self, node: Node) -> str:
        words = []
        if isinstance(node, Task) and node.status is not NodeStatus.unknown:
            words.append(f"state:{node.status.value}")
        if node.suspended:
            words.append("suspended:1")
        return f" # {' '.join(words)}" if words else ""

    def repeat_state(self, node: Node) -> str:
        repeat = node.repeat
        if not self.with_state or repeat.index == 0:
            return ""
        return f" # {repeat.index if repeat.kind in _INDEXED_REPEATS else repeat.value}"

    def write(self) -> str:
        body_start = len(self.lines)
        for flow in self.flows:
            self.node(flow, 0)
        body = self.lines[body_start:]
        head = ["#takler export"]
        if self.with_state:
            head.append("defs_state MIGRATE")
        head += [f"extern {e}" for e in self.externs]
        return "\n".join([*head, *body, "# enddef", ""])


def export_def(flows: Iterable[Flow], with_state: bool = False) -> str:
    """The ecFlow definition text of ``flows``.

    ``with_state`` writes the state-carrying form ecFlow uses for checkpoints
    (``defs_state MIGRATE``): task states, suspension, event, meter, label and
    repeat values, which :func:`~takler.ecflow.defs.flows_from_def` restores.

    Raises:
        DefinitionError: a name ecFlow would not accept (takler allows ``-``).
    """
    return _Writer(list(flows), with_state).write()
