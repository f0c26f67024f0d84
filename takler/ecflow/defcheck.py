"""Check the references of loaded ecFlow flows the way ecFlow's ``Defs::check`` does.

Node paths in triggers, completes and inlimits resolve as in ecFlow: ``a`` is
the node itself or a sibling; ``a/b`` is looked up under the parent, then
under the node; each ``..`` climbs one level above the parent. A path that
resolves nowhere must be declared with ``extern``. Where takler's own rule
would find a different node, the reference is rewritten to the absolute
path, so the flow runs as it would under ecFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from takler.core.bunch import resolve_path
from takler.core.errors import DefinitionError, TaklerError
from takler.core.expression import (
    AttrRef,
    BinOp,
    Expr,
    IntLit,
    Neg,
    NodeRef,
    Not,
    StateLit,
    format_expression,
    references,
)
from takler.core.node import Family, Flow, Node
from takler.ecflow.deflexer import Statement

_EXTERN = "extern"


class Unresolved(Exception):
    """A reference that names no node and no extern."""


def _descend(node: Node, parts: Sequence[str]) -> Node | None:
    for part in parts:
        if not isinstance(node, Family):
            return None
        found = next((c for c in node.children if c.name == part), None)
        if found is None:
            return None
        node = found
    return node


class Finder:
    """Finds nodes the way ecFlow resolves paths in expressions and inlimits."""

    def __init__(self, flows: Sequence[Flow], externs: Iterable[str]) -> None:
        self.flows = {f.name: f for f in flows}
        self.externs = set(externs)

    def absolute(self, path: str) -> Node | None:
        parts = [p for p in path.split("/") if p]
        flow = self.flows.get(parts[0]) if parts else None
        return _descend(flow, parts[1:]) if flow is not None else None

    def is_extern(self, path: str, name: str) -> bool:
        return path in self.externs or (bool(name) and f"{path}:{name}" in self.externs)

    def relative(self, owner: Node, parts: list[str]) -> Node | None:
        if len(parts) == 1 and owner.name == parts[0]:
            return owner
        if owner.parent is None:
            return None
        if len(parts) == 1:
            return _descend(owner.parent, parts)
        return _descend(owner.parent, parts) or _descend(owner, parts)

    def find(self, owner: Node, path: str, name: str = "") -> Node | str:
        """The node ``path`` names from ``owner`` (ecFlow's rule), or ``_EXTERN``."""
        if path.startswith("/"):
            found = self.absolute(path)
            if found is not None:
                return found
            suite = next((p for p in path.split("/") if p), "")
            if self.is_extern(path, name) and suite not in self.flows:
                return _EXTERN
            raise Unresolved(f"no node {path}")
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise Unresolved(f"empty path {path!r}")
        if len(parts) == 1 or parts[0] not in (".", ".."):
            if len(parts) == 1:
                found = self.relative(owner, parts)
                if found is None and not self.is_extern(path, name):
                    raise Unresolved(
                        f"no node {path!r}: expected {path} to be {owner.name} or a sibling of it"
                    )
                return found if found is not None else _EXTERN
            if self.is_extern(path, name):
                return _EXTERN
            parts.insert(0, ".")
        if parts[0] == ".":
            found = self.relative(owner, parts[1:])
        else:
            parent = owner.parent
            while parts and parent is not None and parts[0] == "..":
                parts.pop(0)
                parent = parent.parent
            if parent is not None:
                found = _descend(parent, parts)
            else:
                found = self.absolute("/" + "/".join(parts)) if ".." not in parts else None
        if found is None:
            raise Unresolved(f"no node {path!r} from {owner.node_path}")
        return found


def _has_attribute(node: Node, name: str) -> bool:
    if name in node.events or name in node.meters or name in node.limits:
        return True
    if name.isdigit() and any(e.number == int(name) for e in node.events.values()):
        return True
    if node.repeat is not None and node.repeat.name == name:
        return True
    return node.find_parameter(name) is not None


def _conformity(expr: Expr, condition: bool = True) -> str | None:
    """What ecFlow refuses in an expression that takler's parser allows."""
    if isinstance(expr, NodeRef) and condition:
        return f"'{expr.path}' alone is not a condition: write '{expr.path} == complete'"
    if isinstance(expr, Not):
        return _conformity(expr.operand, True)
    if isinstance(expr, Neg):
        return _conformity(expr.operand, False)
    if not isinstance(expr, BinOp):
        return None
    if expr.op in ("/", "%") and isinstance(expr.right, IntLit) and expr.right.value == 0:
        return "division by zero" if expr.op == "/" else "modulo by zero"
    sides = (expr.left, expr.right)
    if any(isinstance(s, StateLit) for s in sides) and any(isinstance(s, AttrRef) for s in sides):
        return "an event, meter or variable is compared with a node state"
    logical = expr.op in ("and", "or")
    return _conformity(expr.left, logical) or _conformity(expr.right, logical)


def rewrite_paths(expr: Expr, paths: dict[str, str]) -> Expr:
    """``expr`` with the reference paths in ``paths`` replaced."""
    if isinstance(expr, NodeRef):
        return NodeRef(paths.get(expr.path, expr.path))
    if isinstance(expr, AttrRef):
        return AttrRef(paths.get(expr.path, expr.path), expr.name)
    if isinstance(expr, Not):
        return Not(rewrite_paths(expr.operand, paths))
    if isinstance(expr, Neg):
        return Neg(rewrite_paths(expr.operand, paths))
    if isinstance(expr, BinOp):
        return BinOp(expr.op, rewrite_paths(expr.left, paths), rewrite_paths(expr.right, paths))
    return expr


def _check_expr(finder: Finder, node: Node, which: str, fail: _Fail, lenient: bool) -> None:
    attr = node.trigger if which == "trigger" else node.complete_expr
    assert attr is not None
    problem = _conformity(attr.expr)
    if problem:
        raise fail(f"{which} {attr.text!r}: {problem}")
    paths: dict[str, str] = {}
    for ref in references(attr.expr):
        name = ref.name if isinstance(ref, AttrRef) else ""
        try:
            target = finder.find(node, ref.path, name)
        except Unresolved as e:
            if lenient:
                continue
            raise fail(f"{which} references {ref.path}: {e} (declare it with extern?)") from None
        if isinstance(target, str):
            continue
        if name and not _has_attribute(target, name):
            raise fail(
                f"{which} references {ref.path}:{name}, but {target.node_path} has no event,"
                f" meter, repeat, limit or variable {name}"
            )
        if resolve_path(node, ref.path) != target.node_path:
            paths[ref.path] = target.node_path
    if paths:
        node.replace_expression(which, format_expression(rewrite_paths(attr.expr, paths)))


def _add_inlimit(finder: Finder, node: Node, st: Statement, fail: _Fail, lenient: bool) -> None:
    args = list(st.args)
    flags = {"-n": False, "-s": False}
    while args and args[0] in flags:
        flags[args.pop(0)] = True
    if not args or len(args) > 2:
        raise fail("inlimit takes [-n] [-s] [path:]name [tokens]")
    spec = args[0]
    try:
        tokens = int(args[1]) if len(args) == 2 else 1
    except ValueError:
        raise fail(f"inlimit tokens must be an integer, not {args[1]!r}") from None
    path, _, name = spec.rpartition(":")
    if path:
        try:
            owner = finder.find(node, path, name)
        except Unresolved as e:
            if not lenient:
                raise fail(f"inlimit {spec}: {e} (declare it with extern?)") from None
            owner = _EXTERN
        if not isinstance(owner, str):
            if name not in owner.limits:
                raise fail(f"inlimit {spec}: {owner.node_path} has no limit {name}")
            if resolve_path(node, path) != owner.node_path:
                spec = f"{owner.node_path}:{name}"
    elif not lenient and not any(name in n.limits for n in (node, *node.ancestors())):
        raise fail(f"inlimit {name}: no limit {name} on {node.node_path} or above it")
    node.add_in_limit(spec, tokens, node_only=flags["-n"], submission_only=flags["-s"])


class _Fail:
    def __init__(self, source: str, line: int) -> None:
        self.where = f"{source}:{line}"

    def __call__(self, what: str) -> DefinitionError:
        return DefinitionError(f"{self.where}: {what}")


def check_references(
    flows: Sequence[Flow],
    externs: Iterable[str],
    source: str,
    exprs: Sequence[tuple[Node, str, str, int]],
    inlimits: Sequence[tuple[Node, Statement]],
    *,
    lenient: bool = False,
) -> None:
    """Resolve and add inlimits, then check (and if needed rewrite) every expression.

    ``lenient`` (for ecFlow checkpoints, which keep no externs and which ecFlow
    loads unchecked) lets references that resolve nowhere stand as written.

    Raises:
        DefinitionError: a reference names no node (and no extern), an attribute
            the node lacks, or an expression ecFlow would refuse.
    """
    finder = Finder(flows, externs)
    for node, st in inlimits:
        fail = _Fail(source, st.line)
        try:
            _add_inlimit(finder, node, st, fail, lenient)
        except TaklerError as e:
            if isinstance(e, DefinitionError):
                raise
            raise fail(str(e)) from None
    for node, which, _text, line in exprs:
        fail = _Fail(source, line)
        try:
            _check_expr(finder, node, which, fail, lenient)
        except TaklerError as e:
            if isinstance(e, DefinitionError):
                raise
            raise fail(str(e)) from None
