"""Rendering the live view: rich renderables from a :class:`ViewModel`, no I/O.

Large flows stay readable by choosing which rows to draw for the height
available, in steps until they fit: families whose tasks are all complete
fold to one line; then families with no aborted, active or submitted task
fold to a summary; then quiet siblings inside busy families fold to one
"others" line; last, busy tasks are kept by priority (aborted, active,
submitted) and the rest counted. Aborted and active work is never folded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice

import attrs
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.style import Style
from rich.table import Table
from rich.text import Text

from takler_cli.viewmodel import STATES, ViewEvent, ViewModel, VNode

__all__ = ["STATE_COLOURS", "Row", "ViewModel", "format_age", "render", "select_rows"]

#: ecFlow's colours for node states
STATE_COLOURS = {
    "unknown": "#bebebe",
    "queued": "#add8e6",
    "submitted": "#40e0d0",
    "active": "#00ff00",
    "complete": "#ffff00",
    "aborted": "#ff0000",
    "suspended": "#ffa500",
}
SERVER_COLOURS = {"running": "#00ff00", "shutdown": "#ffc0cb", "halted": "#ee82ee"}
EVENT_STYLES = {
    "submitted": STATE_COLOURS["submitted"],
    "aborted": "bold " + STATE_COLOURS["aborted"],
    "zombie": "bold magenta",
    "late": "magenta",
    "complete": STATE_COLOURS["complete"],
    "server": "bold",
}
_BADGE_WIDTH = max(len(s) for s in STATES)
_RANK = {"aborted": 0, "active": 1, "submitted": 2}
_NAME_WIDTH = 60


def state_style(state: str) -> Style:
    """Black on the state's colour, as ecFlow draws a node."""
    return Style(color="black", bgcolor=STATE_COLOURS.get(state, "#bebebe"))


def badge(state: str) -> Text:
    return Text(f" {state:<{_BADGE_WIDTH}} ", style=state_style(state))


@attrs.frozen
class Row:
    """A line of the tree: a node (``open`` for an expanded family) or a note."""

    depth: int
    node: VNode | None
    open: bool = False
    note: str = ""


# ---------------------------------------------------------------- choosing rows


def select_rows(model: ViewModel, budget: int | None = None, *, fold: bool = True) -> list[Row]:
    """The tree lines to draw in at most ``budget`` lines (all when ``None``).

    ``fold=False`` (only without a budget) shows complete families unfolded.
    """
    if budget is None:
        return list(_rows(model, 0 if fold else -1))
    budget = max(budget, 1)
    for level in (0, 1, 2):
        # islice stops the walk early: a huge quiet flow costs only `budget` rows.
        rows = list(islice(_rows(model, level), budget + 1))
        if len(rows) <= budget:
            return rows
    return _busiest(model, budget)


def _folded(node: VNode, level: int) -> bool:
    if level < 0:
        return False
    if node.all_complete():
        return True
    return level >= 1 and node.ntasks > 0 and node.busy() == 0


def _rows(model: ViewModel, level: int) -> Iterator[Row]:
    stack: list[tuple[VNode | str, int]] = [(r, 0) for r in reversed(model.roots.values())]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            yield Row(depth, None, note=item)
            continue
        if item.is_task:
            yield Row(depth, item)
            continue
        folded = _folded(item, level)
        yield Row(depth, item, open=not folded)
        if folded:
            continue
        children = list(item.children.values())
        if level >= 2:
            shown = [c for c in children if c.busy()]
            quiet = [c for c in children if not c.busy()]
            if quiet:
                stack.append((_others(quiet), depth + 1))
            children = shown
        stack.extend((c, depth + 1) for c in reversed(children))


def _others(quiet: list[VNode]) -> str:
    total: dict[str, int] = {}
    for node in quiet:
        for state, n in node.counts.items():
            if n:
                total[state] = total.get(state, 0) + n
    what = ", ".join(f"{total[s]} {s}" for s in STATES if total.get(s))
    return f"… {len(quiet)} more ({what or 'no tasks'})"


def _busy_tasks(model: ViewModel) -> Iterator[VNode]:
    stack = [r for r in reversed(model.roots.values()) if r.busy()]
    while stack:
        node = stack.pop()
        if node.is_task:
            yield node
        else:
            stack.extend(c for c in reversed(node.children.values()) if c.busy())


def _busiest(model: ViewModel, budget: int) -> list[Row]:
    tasks = list(_busy_tasks(model))
    order = sorted(range(len(tasks)), key=lambda i: (_RANK[tasks[i].state], i))
    keep: set[str] = set()
    room = budget - 1  # the last line counts what is left out
    for i in order:
        new = []
        node: VNode | None = tasks[i]
        while node is not None and node.path not in keep:
            new.append(node.path)
            node = node.parent
        if len(new) <= room:
            keep.update(new)
            room -= len(new)
    rows: list[Row] = []
    stack = [(r, 0) for r in reversed(model.roots.values()) if r.path in keep]
    while stack:
        item, depth = stack.pop()
        rows.append(Row(depth, item, open=not item.is_task))
        stack.extend((c, depth + 1) for c in reversed(item.children.values()) if c.path in keep)
    left = len(tasks) - sum(1 for t in tasks if t.path in keep)
    rows.append(
        Row(0, None, note=f"… {left} more busy tasks: enlarge the terminal or watch a PATH")
    )
    return rows


# ---------------------------------------------------------------- drawing


def format_age(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h04m``, ``3d02h``; empty when unknown."""
    if seconds is None:
        return ""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _counts_text(counts: Iterable[tuple[str, int]]) -> Text:
    text = Text()
    for state, n in counts:
        if n:
            if text:
                text.append(" ")
            text.append(f"{n} {state}", style=Style(color=STATE_COLOURS.get(state)))
    return text


def _detail(row: Row) -> Text:
    node = row.node
    if node is None:
        return Text()
    if not node.is_task:
        if row.open:
            return Text()
        if node.all_complete():
            return Text(f"{node.ntasks} tasks complete", style="dim")
        return _counts_text((s, node.counts[s]) for s in STATES)
    text = Text()
    if node.state == "aborted" and node.reason:
        text.append(node.reason, style=STATE_COLOURS["aborted"])
    for flag in sorted(node.flags & {"late", "zombie"}):
        text.append(f" {flag}" if text else flag, style="bold magenta")
    for name, (value, maximum) in node.meters.items():
        text.append(f"{'  ' if text else ''}{name} {value}/{maximum}", style="cyan")
    for name, value in node.labels.items():
        if value:
            text.append(f"{'  ' if text else ''}{name}: ", style="dim")
            text.append(value)
    return text


def _tree_text(rows: list[Row], now: float) -> Text:
    # One Text with hand-made columns: a rich Table measures every cell and
    # costs several times more per frame.
    names = []
    for row in rows:
        node = row.node
        indent = "  " * row.depth
        if node is None:
            names.append(indent + row.note)
        elif node.is_task:
            names.append(f"{indent}  {node.name}")
        else:
            names.append(f"{indent}{'▾' if row.open else '▸'} {node.name}")
    width = min(
        max((len(n) for n, r in zip(names, rows, strict=True) if r.node), default=4), _NAME_WIDTH
    )
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(f"{'node':<{width}}  {'state':<{_BADGE_WIDTH + 2}}  try    time  info", style="dim")
    for name, row in zip(names, rows, strict=True):
        out.append("\n")
        node = row.node
        if node is None:
            out.append(name, style="dim italic")
            continue
        out.append(_fit(name, width), style="" if node.is_task else "bold")
        out.append("  ")
        out.append_text(badge(node.state))
        tryno = str(node.tryno) if node.is_task and node.tryno else ""
        age = format_age(now - node.since) if node.since is not None else ""
        out.append(f"  {tryno:>3}  {age:>6}  ")
        out.append_text(_detail(row))
    return out


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _header(model: ViewModel, title: str, progress: bool) -> list[RenderableType]:
    state = model.server_state
    line = Text()
    line.append("takler", style="bold")
    if title:
        line.append(f"  {title}")
    line.append("  server ")
    line.append(
        f" {state} ", style=Style(color="black", bgcolor=SERVER_COLOURS.get(state, "#bebebe"))
    )
    line.append(f"  {model.task_count()} tasks")
    counts = Text()
    for s in STATES:
        if counts:
            counts.append("  ")
        counts.append(s, style=state_style(s))
        counts.append(f" {model.count(s)}")
    parts: list[RenderableType] = [line, counts]
    if progress:
        total = model.task_count()
        done = model.count("complete")
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column(no_wrap=True)
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=done, width=40, complete_style="#ffff00"),
            f"{done}/{total} tasks complete",
        )
        parts.append(bar)
    return parts


def _events_text(events: Iterable[ViewEvent]) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    for i, event in enumerate(events):
        if i:
            out.append("\n")
        out.append(time.strftime("%H:%M:%S", time.localtime(event.time)), style="dim")
        out.append("  ")
        out.append(f"{event.kind:<9}", style=EVENT_STYLES.get(event.kind, ""))
        out.append(f"  {event.path}")
        if event.text:
            out.append(f"  {event.text}")
    return out


def render(
    model: ViewModel,
    now: float,
    *,
    height: int | None = None,
    title: str = "",
    progress: bool = False,
    fold: bool = True,
) -> RenderableType:
    """The whole view: header with counts, the tree, the latest events.

    Args:
        model: what to draw.
        now: epoch seconds, for the time each node has spent in its state.
        height: lines available (``None``: draw every row).
        title: shown in the header (the server's address).
        progress: add a bar of tasks complete (``serve --view --until-complete``).
        fold: fold complete families (without a height only; a height always folds).
    """
    header = _header(model, title, progress)
    events = list(model.events)
    budget = None
    if height is not None:
        used = len(header) + 1 + (len(events) + 1 if events else 0)
        budget = max(height - used, 3)
    rows = select_rows(model, budget, fold=fold)
    parts: list[RenderableType] = [*header, _tree_text(rows, now)]
    if events:
        parts += [Rule("latest events", style="dim", align="left"), _events_text(events)]
    return Group(*parts)
