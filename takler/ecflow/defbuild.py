"""Build takler flows from a parsed ecFlow definition (see :mod:`takler.ecflow.defs`).

Every model error is re-raised as ``<source>:<line>: <what>``; the flows are
returned only when all of them built and every reference resolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, TypeAlias

import attrs

from takler.core.errors import DefinitionError, RepeatError, TaklerError, UnsupportedFeatureError
from takler.core.node import Family, Flow, Node, Task
from takler.core.status import NodeStatus
from takler.ecflow.defcheck import check_references
from takler.ecflow.deflexer import Statement, dequote
from takler.ecflow.defs import ParsedDefs, ParsedNode
from takler.ecflow.variables import ECF_TO_TAKLER, SETTABLE

#: ecFlow expression syntax takler's expression language does not have.
_EXPR_UNSUPPORTED = (
    (re.compile(r"<flag>"), "node flags in expressions (<flag>late...)"),
    (re.compile(r"\bcal::"), "calendar functions in expressions (cal::...)"),
    (re.compile(r"(^|[\s(!])\s*:[A-Za-z_]"), "parent-variable references in expressions (:NAME)"),
)
_AUTOCANCEL = re.compile(r"(\+?\d{1,2}:\d{2}|\d+)\Z")
_CLOCK_DATE = re.compile(r"\d{1,2}\.\d{1,2}\.\d{4}\Z")
_CLOCK_GAIN = re.compile(r"(\+?\d{1,2}:\d{2}|-?\d+)\Z")
_HHMM = re.compile(r"\d{1,2}:\d{2}\Z")
_VERIFY = re.compile(r"(unknown|complete|queued|aborted|submitted|active|suspended):\d+\Z")


@attrs.define(eq=False)
class _Exprs:
    """The trigger or complete parts of a node: ``(joiner, text, line)``."""

    parts: list[tuple[str, str, int]] = attrs.Factory(list)


@attrs.define(eq=False)
class _Pending:
    """What is applied after every node exists: expressions, inlimits, states."""

    exprs: list[tuple[Node, str, str, int]] = attrs.Factory(list)
    inlimits: list[tuple[Node, Statement]] = attrs.Factory(list)
    states: list[tuple[int, Callable[[], object]]] = attrs.Factory(list)


class _Builder:
    def __init__(self, defs: ParsedDefs) -> None:
        self.defs = defs
        self.src = defs.source
        self.pending = _Pending()

    def fail(self, line: int, what: str) -> DefinitionError:
        return DefinitionError(f"{self.src}:{line}: {what}")

    def build(self) -> list[Flow]:
        flows: list[Flow] = []
        names: set[str] = set()
        for parsed in self.defs.suites:
            if parsed.name in names:
                raise self.fail(parsed.line, f"suite {parsed.name} defined twice")
            names.add(parsed.name)
            try:
                flow = Flow(parsed.name)
            except TaklerError as e:
                raise self.fail(parsed.line, str(e)) from None
            self.fill(flow, parsed)
            self.defs_variables(flow)
            flows.append(flow)
        for node, which, text, line in self.pending.exprs:
            self.guard(line, partial(_add_expr, node, which, text))
        externs = [st.args[0] for st in self.defs.externs]
        check_references(
            flows,
            externs,
            self.src,
            self.pending.exprs,
            self.pending.inlimits,
            lenient=self.defs.state_form,
        )
        for line, apply_state in self.pending.states:
            self.guard(line, apply_state)
        return flows

    def guard(self, line: int, action: Callable[[], object]) -> object:
        try:
            return action()
        except UnsupportedFeatureError:
            raise
        except TaklerError as e:
            raise self.fail(line, str(e)) from None

    def defs_variables(self, flow: Flow) -> None:
        # ecFlow's definition-level variables are visible to every suite.
        for st in self.defs.variables:
            name, _ = self.edit_args(st)
            if st.comment != "server" and name not in flow.parameters:
                self.guard(st.line, partial(_edit, self, flow, st))

    def fill(self, node: Node, parsed: ParsedNode) -> None:
        if self.defs.state_form and parsed.comment:
            self.header_state(node, parsed)
        exprs = {"trigger": _Exprs(), "complete": _Exprs()}
        seen: dict[str, int] = {}
        for st in parsed.attributes:
            handler = _HANDLERS.get(st.keyword)
            if st.keyword in ("trigger", "complete"):
                self.expr_part(exprs[st.keyword], st)
            elif st.keyword in ("defstatus", "clock", "endclock", "autocancel"):
                if st.keyword in seen:
                    raise self.fail(
                        st.line, f"{st.keyword} given twice (first on line {seen[st.keyword]})"
                    )
                seen[st.keyword] = st.line
            if handler is not None:
                self.guard(st.line, partial(handler, self, node, st))
            if (
                st.keyword in ("repeat", "cron")
                and node.repeat is not None
                and any(t.kind == "cron" for t in node.times)
            ):
                raise self.fail(st.line, "a node cannot have both a repeat and a cron")
        self.check_clock(parsed)
        for which, got in exprs.items():
            if got.parts:
                text = "".join(f"{joiner}{part}" for joiner, part, _ in got.parts)
                self.pending.exprs.append((node, which, text, got.parts[0][2]))
        for child in parsed.children:
            assert isinstance(node, Family)
            made = self.guard(child.line, partial(_make_child, node, child))
            assert isinstance(made, Node)
            self.fill(made, child)

    def expr_part(self, exprs: _Exprs, st: Statement) -> None:
        args = list(st.args)
        joiner = ""
        if args and args[0] in ("-a", "-o"):
            joiner = " and " if args.pop(0) == "-a" else " or "
        text = " ".join(args).strip()
        if not text:
            raise self.fail(st.line, f"{st.keyword} without an expression")
        if exprs.parts and not joiner:
            raise self.fail(
                st.line,
                f"second {st.keyword}: continue the first with '{st.keyword} -a' (and) or '-o' (or)",
            )
        if not exprs.parts and joiner:
            raise self.fail(
                st.line, f"the first {st.keyword} cannot start with {args and st.args[0]}"
            )
        for pattern, feature in _EXPR_UNSUPPORTED:
            if pattern.search(text):
                raise UnsupportedFeatureError(f"{self.src}:{st.line}: {feature} are not supported")
        from takler.core.expression import parse_expression

        self.guard(st.line, partial(parse_expression, text))
        exprs.parts.append((joiner, text, st.line))

    def check_clock(self, parsed: ParsedNode) -> None:
        dates: dict[str, tuple[int, int, int] | None] = {}
        for st in parsed.attributes:
            if st.keyword not in ("clock", "endclock"):
                continue
            args = list(st.args)
            if st.keyword == "clock":
                if not args or args[0] not in ("real", "hybrid"):
                    raise self.fail(st.line, "clock must be 'real' or 'hybrid'")
                args.pop(0)
            if args and _CLOCK_DATE.match(args[0]):
                dates[st.keyword] = _clock_date(args.pop(0))
                if dates[st.keyword] is None:
                    raise self.fail(st.line, f"bad {st.keyword} date {st.args[-1 - len(args)]}")
            if len(args) > 1 or (args and not _CLOCK_GAIN.match(args[0])):
                raise self.fail(
                    st.line, f"bad {st.keyword} {' '.join(st.args)!r}: expected [dd.mm.yyyy] [gain]"
                )
        start, end = dates.get("clock"), dates.get("endclock")
        if start is not None and end is not None and end <= start:
            line = next(st.line for st in parsed.attributes if st.keyword == "clock")
            raise self.fail(line, "endclock must be after the clock's start date")

    def edit_args(self, st: Statement) -> tuple[str, str]:
        if len(st.args) < 2:
            raise self.fail(st.line, "edit needs a name and a value")
        return st.args[0], dequote(" ".join(st.args[1:]))

    def header_state(self, node: Node, parsed: ParsedNode) -> None:
        from takler.core import ops

        words = (parsed.comment or "").split()
        for word in words:
            key, _, value = word.partition(":")
            if key == "state" and isinstance(node, Task):
                status = self.guard(parsed.line, partial(NodeStatus.parse, value))
                assert isinstance(status, NodeStatus)
                if status not in (NodeStatus.unknown, NodeStatus.queued):
                    self.pending.states.append((parsed.line, partial(ops.force, node, status)))
            elif word == "suspended:1":
                self.pending.states.append((parsed.line, partial(ops.suspend, node)))


# ---------------------------------------------------------------- attribute handlers

Handler: TypeAlias = Callable[[_Builder, Node, Statement], object]


def _int(b: _Builder, st: Statement, token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise b.fail(st.line, f"{st.keyword}: {what} must be an integer, not {token!r}") from None


def _edit(b: _Builder, node: Node, st: Statement) -> None:
    name, value = b.edit_args(st)
    old = node.parameters.get(name)
    node.set_parameter(name, value)  # ecFlow lets a later edit replace an earlier one
    twin = ECF_TO_TAKLER.get(name) if name in SETTABLE else None
    if twin is not None and node.parameters.get(twin, old) == old:
        node.set_parameter(twin, value)


def _event(b: _Builder, node: Node, st: Statement) -> None:
    args = list(st.args)
    initial = bool(args) and args[-1] == "set" and len(args) > 1
    if initial or (len(args) > 1 and args[-1] == "clear"):
        args.pop()
    if not args or len(args) > 2:
        raise b.fail(st.line, "event takes a number, a name, or a number and a name [set]")
    number = int(args[0]) if args[0].isdigit() else None
    if len(args) == 2 and number is None:
        raise b.fail(st.line, f"event: {args[0]!r} is not an event number")
    event = node.add_event(args[-1], number=number, initial=initial)
    if b.defs.state_form and st.comment in ("set", "clear"):
        b.pending.states.append((st.line, partial(node.set_event, event.name, st.comment == "set")))


def _meter(b: _Builder, node: Node, st: Statement) -> None:
    if len(st.args) not in (3, 4):
        raise b.fail(st.line, "meter takes a name, a minimum, a maximum and an optional threshold")
    lo, hi = (_int(b, st, t, w) for t, w in zip(st.args[1:3], ("minimum", "maximum"), strict=True))
    threshold = _int(b, st, st.args[3], "threshold") if len(st.args) == 4 else None
    meter = node.add_meter(st.args[0], lo, hi, threshold)
    if b.defs.state_form and st.comment:
        value = _int(b, st, st.comment.split()[0], "value")
        b.pending.states.append((st.line, partial(node.set_meter, meter.name, value)))


def _label(b: _Builder, node: Node, st: Statement) -> None:
    if not st.args:
        raise b.fail(st.line, "label needs a name")
    text = dequote(" ".join(st.args[1:])).replace("\\n", "\n")
    label = node.add_label(st.args[0], text)
    if b.defs.state_form and st.comment:
        value = dequote(st.comment).replace("\\n", "\n")
        b.pending.states.append((st.line, partial(node.set_label, label.name, value)))


def _limit(b: _Builder, node: Node, st: Statement) -> None:
    if len(st.args) != 2:
        raise b.fail(st.line, "limit takes a name and a maximum")
    node.add_limit(st.args[0], _int(b, st, st.args[1], "maximum"))


def _inlimit(b: _Builder, node: Node, st: Statement) -> None:
    b.pending.inlimits.append((node, st))


def _repeat(b: _Builder, node: Node, st: Statement) -> None:
    if st.args and st.args[0] == "datetime":
        raise UnsupportedFeatureError(f"{b.src}:{st.line}: repeat datetime is not supported")
    node.add_repeat(" ".join(st.args))
    if b.defs.state_form and st.comment and st.comment.split()[0] != "status":
        value = st.comment.split()[0]
        b.pending.states.append((st.line, partial(_restore_repeat, node.repeat, value)))


def _timed(method: str) -> Handler:
    def handler(b: _Builder, node: Node, st: Statement) -> None:
        text = " ".join(st.args)
        if st.keyword == "cron":
            text = re.sub(r"\s*,\s*", ",", text)  # ecFlow allows "-w 0, 1"
            if any(t.startswith("+") for t in st.args):
                raise UnsupportedFeatureError(
                    f"{b.src}:{st.line}: relative cron times (cron +hh:mm ...) are not supported"
                )
        getattr(node, method)(text)
        _check_series(b, st)

    return handler


def _check_series(b: _Builder, st: Statement) -> None:
    """ecFlow refuses a series whose increment is longer than the span."""
    times = [t.lstrip("+") for t in st.args[-3:]]
    if st.keyword not in ("time", "today", "cron") or len(times) != 3:
        return
    if not all(_HHMM.match(t) for t in times):
        return
    start, end, step = ((int(t[:-3]) * 60 + int(t[-2:])) for t in times)
    if step > end - start >= 0:
        raise b.fail(
            st.line, f"{st.keyword}: the increment {times[2]} is longer than {times[0]}-{times[1]}"
        )


def _defstatus(b: _Builder, node: Node, st: Statement) -> None:
    if len(st.args) != 1:
        raise b.fail(st.line, "defstatus takes one state")
    node.set_defstatus(NodeStatus.parse(st.args[0]))


def _clock(b: _Builder, node: Node, st: Statement) -> None:
    assert isinstance(node, Flow)
    node.clock = " ".join(st.args)


def _autocancel(b: _Builder, node: Node, st: Statement) -> None:
    text = " ".join(st.args)
    if not _AUTOCANCEL.match(text):
        raise b.fail(st.line, f"bad autocancel {text!r}: expected +hh:mm, hh:mm or days")
    node.autocancel = text


def _verify(b: _Builder, node: Node, st: Statement) -> None:
    # Only ecFlow's simulator reads verify: checked, then left out.
    if len(st.args) != 1 or not _VERIFY.match(st.args[0]):
        raise b.fail(st.line, "verify takes <state>:<count>, as 'verify complete:3'")


def _ignored(b: _Builder, node: Node, st: Statement) -> None:
    """``endclock`` (simulator only, checked by check_clock) and ``calendar`` (state)."""


_HANDLERS: dict[str, Handler] = {
    "edit": _edit,
    "event": _event,
    "meter": _meter,
    "label": _label,
    "limit": _limit,
    "inlimit": _inlimit,
    "repeat": _repeat,
    "time": _timed("add_time"),
    "today": _timed("add_today"),
    "date": _timed("add_date"),
    "day": _timed("add_day"),
    "cron": _timed("add_cron"),
    "late": _timed("add_late"),
    "defstatus": _defstatus,
    "clock": _clock,
    "autocancel": _autocancel,
    "verify": _verify,
    "endclock": _ignored,
    "calendar": _ignored,
}


def _clock_date(text: str) -> tuple[int, int, int] | None:
    import datetime as dt

    day, month, year = (int(p) for p in text.split("."))
    try:
        dt.date(year, month, day)
    except ValueError:
        return None
    return (year, month, day)


def _make_child(parent: Family, parsed: ParsedNode) -> Node:
    child: Node = Task(parsed.name) if parsed.kind == "task" else Family(parsed.name)
    return parent.add_child(child)


def _restore_repeat(repeat: Any, value: str) -> None:
    # ecFlow writes the index for the repeats whose values are words or a list.
    if repeat.kind not in ("enumerated", "string", "datelist"):
        repeat.set_value(value)
        return
    values = repeat.dates if repeat.kind == "datelist" else repeat.values
    if not value.isdigit() or int(value) >= len(values):
        raise RepeatError(f"repeat {repeat.name}: no value at index {value}")
    repeat.set_value(str(values[int(value)]))


def _add_expr(node: Node, which: str, text: str) -> None:
    if which == "trigger":
        node.add_trigger(text)
    else:
        node.add_complete(text)


def build_flows(defs: ParsedDefs) -> list[Flow]:
    """The flows of a parsed definition.

    Raises:
        DefinitionError: with ``<source>:<line>:`` for anything the model refuses.
    """
    return _Builder(defs).build()
