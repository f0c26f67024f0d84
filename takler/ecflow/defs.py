"""Read ecFlow definition (.def) files: statements -> a tree of parsed nodes -> flows.

:func:`parse_def` checks the structure (which keyword may appear where, the
``end*`` keywords) and refuses the features takler leaves out, naming the
feature and the line. :mod:`takler.ecflow.defbuild` turns the tree into
:class:`~takler.core.node.Flow` objects.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import attrs

from takler.core.errors import DefinitionError, UnsupportedFeatureError
from takler.ecflow.deflexer import Statement, lex

if TYPE_CHECKING:
    from takler.core.node import Flow, Node

_NODE_ATTRS = frozenset(
    {
        "edit", "limit", "inlimit", "defstatus", "repeat", "late", "cron", "autocancel",
        "event", "meter", "label", "verify",
    }
)  # fmt: skip
_SUITE_ONLY = frozenset({"clock", "endclock", "calendar"})
_NOT_ON_SUITE = frozenset({"trigger", "complete", "time", "today", "date", "day"})
ALLOWED = {
    "suite": _NODE_ATTRS | _SUITE_ONLY,
    "family": _NODE_ATTRS | _NOT_ON_SUITE,
    "task": _NODE_ATTRS | _NOT_ON_SUITE,
}

#: ecFlow features takler refuses, and why.
UNSUPPORTED = {
    "aviso": "takler has no Aviso listener",
    "mirror": "takler does not mirror nodes of another server",
    "queue": "takler has no queue attribute; use a repeat or a family of tasks",
    "generic": "generic attributes carry no behaviour takler could honour",
    "alias": "aliases are ecFlow UI run copies of a task",
    "autoarchive": "takler does not archive nodes to disk",
    "autorestore": "takler does not archive nodes to disk",
    "zombie": "takler refuses every zombie child command; per-node zombie policies are not supported",
}


@attrs.define(eq=False)
class ParsedNode:
    """A suite, family or task with its attribute statements, in file order."""

    kind: str
    name: str
    line: int
    comment: str | None = None
    attributes: list[Statement] = attrs.Factory(list)
    children: list[ParsedNode] = attrs.Factory(list)


@attrs.define(eq=False)
class ParsedDefs:
    """A whole definition: suites, externs, definition-level variables."""

    source: str
    suites: list[ParsedNode] = attrs.Factory(list)
    externs: list[Statement] = attrs.Factory(list)
    variables: list[Statement] = attrs.Factory(list)
    state_form: bool = False


def _where(source: str, st: Statement) -> str:
    return f"{source}:{st.line}"


def _refuse(source: str, st: Statement, feature: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"{_where(source, st)}: {feature} is not supported: {UNSUPPORTED[feature]}"
    )


def _open_node(defs: ParsedDefs, stack: list[ParsedNode], st: Statement) -> None:
    src = defs.source
    if not st.args:
        raise DefinitionError(f"{_where(src, st)}: {st.keyword} name missing")
    if len(st.args) > 1:
        raise DefinitionError(
            f"{_where(src, st)}: unexpected {' '.join(st.args[1:])!r} after {st.keyword} name"
        )
    node = ParsedNode(st.keyword, st.args[0], st.line, st.comment)
    if st.keyword == "suite":
        if stack:
            raise DefinitionError(
                f"{_where(src, st)}: suite {node.name} inside suite {stack[0].name}"
                " (missing endsuite?)"
            )
        defs.suites.append(node)
    else:
        if not stack:
            raise DefinitionError(f"{_where(src, st)}: {st.keyword} outside a suite")
        if stack[-1].kind == "task":
            stack.pop()
        stack[-1].children.append(node)
    stack.append(node)


def _close_node(src: str, stack: list[ParsedNode], st: Statement) -> None:
    want = st.keyword[3:]
    if st.args:
        raise DefinitionError(f"{_where(src, st)}: unexpected {st.args[0]!r} after {st.keyword}")
    if want == "suite":
        if not stack:
            raise DefinitionError(f"{_where(src, st)}: endsuite without suite")
        stack.clear()  # as ecFlow: endsuite also closes open families
        return
    if want == "family" and stack and stack[-1].kind == "task":
        stack.pop()
    if not stack or stack[-1].kind != want:
        raise DefinitionError(f"{_where(src, st)}: {st.keyword} without {want}")
    stack.pop()


def parse_def(text: str, source: str = "<string>") -> ParsedDefs:
    """Parse definition text into a tree of :class:`ParsedNode`.

    Raises:
        UnsupportedFeatureError: a feature takler leaves out (see ``UNSUPPORTED``).
        DefinitionError: malformed structure or a keyword where it is not allowed.
    """
    defs = ParsedDefs(source)
    stack: list[ParsedNode] = []
    for st in lex(text, source):
        kw = st.keyword
        if kw in ("suite", "family", "task"):
            _open_node(defs, stack, st)
        elif kw in ("endsuite", "endfamily", "endtask"):
            _close_node(source, stack, st)
        elif kw in UNSUPPORTED:
            raise _refuse(source, st, kw)
        elif not stack:
            _top_level(defs, st)
        elif kw in ALLOWED[stack[-1].kind]:
            stack[-1].attributes.append(st)
        elif any(kw in allowed for allowed in ALLOWED.values()) or kw == "extern":
            raise DefinitionError(
                f"{_where(source, st)}: {kw} is not allowed on a {stack[-1].kind}"
                f" ({stack[-1].kind} {stack[-1].name})"
            )
        else:
            raise DefinitionError(
                f"{_where(source, st)}: unknown keyword {kw!r} in {stack[-1].kind} {stack[-1].name}"
            )
    return defs


def _top_level(defs: ParsedDefs, st: Statement) -> None:
    src = defs.source
    if st.keyword == "extern":
        if len(st.args) != 1:
            raise DefinitionError(
                f"{_where(src, st)}: extern takes one path, as /suite/node[:name]"
            )
        defs.externs.append(st)
    elif st.keyword == "edit":
        defs.variables.append(st)
    elif st.keyword == "defs_state":
        if defs.suites or defs.externs or defs.variables:
            raise DefinitionError(f"{_where(src, st)}: defs_state must come first")
        defs.state_form = True
    elif st.keyword == "history" and defs.state_form:
        pass  # ecFlow's record of user edits: nothing to restore
    else:
        raise DefinitionError(f"{_where(src, st)}: {st.keyword} outside a suite")


def flows_from_def(text: str, source: str = "<string>") -> list[Flow]:
    """The flows (ecFlow suites) of a definition, checked and complete.

    The state-carrying form (``defs_state`` header, as in ecFlow checkpoints)
    also restores node states, event, meter, label and repeat values.

    Raises:
        UnsupportedFeatureError: a feature takler does not support, with its line.
        DefinitionError: anything malformed, as ``<source>:<line>: <what>``.
    """
    from takler.ecflow.defbuild import build_flows

    return build_flows(parse_def(text, source))


def flows_from_def_file(path: str | PurePath) -> list[Flow]:
    """:func:`flows_from_def` on a file; errors name the file.

    Raises:
        DefinitionError: the file cannot be read, or as :func:`flows_from_def`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DefinitionError(f"{path}: cannot read: {e.strerror or e}") from None
    flows = flows_from_def(text, str(path))
    folder = Path(path).resolve().parent
    for flow in flows:
        for node in flow.walk():
            _resolve_folders(node, folder)
    return flows


#: Folder variables a relative value of which is taken from the .def's folder.
_FOLDERS = ("ECF_HOME", "ECF_FILES", "ECF_INCLUDE", "TAKLER_HOME", "TAKLER_FILES", "TAKLER_INCLUDE")


def _resolve_folders(node: Node, folder: Path) -> None:
    # ecFlow would take a relative folder from the server's working directory,
    # which is rarely what a suite written next to its scripts means.
    for name in _FOLDERS:
        value = node.parameters.get(name)
        if not isinstance(value, str) or not value:
            continue
        parts = value.split(":") if name.endswith("INCLUDE") else [value]
        fixed = ":".join(_absolute(part, folder) for part in parts)
        if fixed != value:
            node.set_parameter(name, fixed)


def _absolute(part: str, folder: Path) -> str:
    # A value built from variables (%ECF_HOME%/x, $HOME/x, ~/x) is left alone.
    if not part or part[0] in "/%$~" or "%" in part:
        return part
    return os.path.normpath(folder / part)
