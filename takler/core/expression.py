"""Trigger and complete expressions: ecFlow's little language, parsed once, evaluated often.

Grammar, loosest binding first (words are case-insensitive)::

    or      := and (('or' | '||') and)*
    and     := not (('and' | '&&') not)*
    not     := ('not' | '!') not | cmp
    cmp     := sum [('==' | '!=' | '<' | '<=' | '>' | '>=' | 'eq' | 'ne' | 'lt' | 'le'
                     | 'gt' | 'ge') sum]           # comparisons do not chain
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/' | '%') unary)*
    unary   := '-' unary | '(' or ')' | INT | STATE | 'set' | 'clear' | PATH [':' NAME]

Tokens:

* NAME is ``[A-Za-z0-9_][A-Za-z0-9_.]*``. PATH is names joined by ``/`` with
  no whitespace, after an optional ``/`` or ``./``/``../`` prefixes:
  ``/f/t``, ``./t``, ``../../f/t``, ``t``. ``path:name`` (ecFlow event
  numbers too: ``t1:1``) is an attribute reference.
* A bare name that is a keyword (a state, ``set``, ``clear``, an operator
  word) is that keyword: write ``./complete`` for a node so named.
* INT is a run of digits not glued to a name character, ``.`` or ``:``;
  ``10x`` and ``10:ev`` are names.
* The slash rule: ``/`` is a path separator only when glued to names on both
  sides (``a/b``) or when it starts a path where an operand is expected
  (``/f/t``). Any other ``/`` divides: ``a / b``, ``a /b``, ``(a)/b``,
  ``10/2``, ``t:m/2``. A ``/`` glued after a node path but not followed by a
  name (``a/ b``, ``a/../b``) is a syntax error.

Values: a node path stands for the node's state; ``path:name`` for an event
(bool), a meter, limit, numeric variable or integer repeat (int), or a date
repeat (:class:`DateValue`). States compare with states and, through
``ECFLOW_STATE_VALUE``, with integers; events compare (``==``/``!=``) with
``set``/``clear``; booleans count as 0/1. Used as a condition, a state means
"is complete" and a date is true. ``date + n``, ``n + date`` and
``date - n`` move by days and ``date - date`` counts days; otherwise a date is
its ``yyyymmdd`` integer. Integer arithmetic floors (``/`` is ``//``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TypeAlias

from takler.core.calendar import DateValue
from takler.core.errors import ExpressionError, InvalidValueError
from takler.core.expr_parser import (
    COMPARISONS,
    AttrRef,
    BinOp,
    EventLit,
    Expr,
    IntLit,
    Neg,
    NodeRef,
    Not,
    StateLit,
    format_expression,
    parse_cached,
    ref_text,
)
from takler.core.status import ECFLOW_STATE_VALUE, NodeStatus

__all__ = [
    "AttrRef",
    "BinOp",
    "EventLit",
    "Expr",
    "IntLit",
    "Neg",
    "NodeRef",
    "Not",
    "Resolver",
    "StateLit",
    "Value",
    "evaluate",
    "explain",
    "format_expression",
    "parse_expression",
    "references",
    "references_of",
]

Value: TypeAlias = NodeStatus | bool | int | DateValue
Resolver: TypeAlias = Callable[[NodeRef | AttrRef], Value]
# What a subtree evaluates to: literals `set`/`clear` stay tagged as EventLit.
_Val: TypeAlias = Value | EventLit

_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# Kinds of value that compare as integers with each other.
_NUMERIC_PAIRS = frozenset(
    {
        ("state", "state"),
        ("state", "int"),
        ("int", "state"),
        ("bool", "bool"),
        ("bool", "int"),
        ("int", "bool"),
        ("int", "int"),
        ("date", "date"),
        ("date", "int"),
        ("int", "date"),
    }
)


def parse_expression(text: str) -> Expr:
    """Parse a trigger or complete expression.

    Identical texts are parsed once and share the same (immutable) tree.

    Raises:
        ExpressionSyntaxError: with the 0-based position and what was expected.
    """
    return parse_cached(text)


def references(expr: Expr) -> list[NodeRef | AttrRef]:
    """The node and attribute references in ``expr``, in order, without duplicates."""
    return list(references_of(expr))


# Trees are immutable and shared by nodes with the same text (parse_cached), so
# a big flow asks about the same few trees again and again. Keyed by identity:
# hashing a generated chain of thousands of terms would recurse that deep. Each
# entry keeps its tree alive, so an id is never reused while it is cached.
_REFS: dict[int, tuple[Expr, tuple[NodeRef | AttrRef, ...]]] = {}
_REFS_MAX = 1 << 16


def references_of(expr: Expr) -> tuple[NodeRef | AttrRef, ...]:
    """:func:`references` as a shared tuple."""
    entry = _REFS.get(id(expr))
    if entry is not None and entry[0] is expr:
        return entry[1]
    found: dict[NodeRef | AttrRef, None] = {}
    _collect(expr, found)
    refs = tuple(found)
    if len(_REFS) >= _REFS_MAX:
        _REFS.clear()
    _REFS[id(expr)] = (expr, refs)
    return refs


def _collect(expr: Expr, found: dict[NodeRef | AttrRef, None]) -> None:
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, BinOp):
            stack.append(node.right)
            stack.append(node.left)
        elif isinstance(node, Not | Neg):
            stack.append(node.operand)
        elif isinstance(node, NodeRef | AttrRef):
            found.setdefault(node)


def evaluate(expr: Expr, resolve: Resolver) -> bool:
    """Whether ``expr`` holds, asking ``resolve`` for the value of each reference.

    ``and``/``or`` short-circuit, so ``resolve`` may not see every reference.

    Raises:
        ExpressionError: a type error (``set + 1``, a state against ``set``...)
            or a division by zero.
        Exception: whatever ``resolve`` raises, unchanged.
    """
    return _truth(_value(expr, resolve), expr)


def _value(expr: Expr, resolve: Resolver) -> _Val:
    kind = type(expr)
    if kind is BinOp:
        assert isinstance(expr, BinOp)
        op = expr.op
        if op == "and" or op == "or":
            # `or` stops at the first true operand, `and` at the first false.
            stop = op == "or"
            for operand in _chain(expr):
                if _truth(_value(operand, resolve), operand) is stop:
                    return stop
            return not stop
        left = _value(expr.left, resolve)
        right = _value(expr.right, resolve)
        if op in COMPARISONS:
            return _compare(expr, left, right)
        return _arithmetic(expr, left, right)
    if kind is NodeRef or kind is AttrRef:
        assert isinstance(expr, NodeRef | AttrRef)
        return resolve(expr)
    if kind is StateLit:
        assert isinstance(expr, StateLit)
        return expr.state
    if kind is IntLit:
        assert isinstance(expr, IntLit)
        return expr.value
    if kind is EventLit:
        assert isinstance(expr, EventLit)
        return expr
    if kind is Not:
        assert isinstance(expr, Not)
        return not _truth(_value(expr.operand, resolve), expr.operand)
    if kind is Neg:
        assert isinstance(expr, Neg)
        return -_number(_value(expr.operand, resolve), expr)
    raise ExpressionError(f"not an expression: {expr!r}")


def _chain(expr: BinOp) -> list[Expr]:
    """The operands of a left-nested run of ``expr.op``, in order, found without recursion."""
    rights = []
    node: Expr = expr
    while isinstance(node, BinOp) and node.op == expr.op:
        rights.append(node.right)
        node = node.left
    rights.append(node)
    rights.reverse()
    return rights


def _truth(value: _Val, expr: Expr) -> bool:
    if isinstance(value, NodeStatus):
        return value is NodeStatus.complete
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, DateValue):
        return True
    if isinstance(value, EventLit):
        return bool(value.value)
    raise ExpressionError(f"{_describe(value)} cannot be used as a condition in {_where(expr)}")


def _compare(expr: BinOp, left: _Val, right: _Val) -> bool:
    op = expr.op
    if isinstance(left, NodeStatus) and isinstance(right, NodeStatus):
        if op == "==":
            return left is right
        if op == "!=":
            return left is not right
    pair = (_kind(left), _kind(right))
    if pair in _NUMERIC_PAIRS or (
        op in ("==", "!=") and "event" in pair and set(pair) <= {"event", "bool"}
    ):
        return _COMPARE[op](_as_int(left), _as_int(right))
    raise ExpressionError(
        f"cannot compare {_describe(left)} with {_describe(right)} in {_where(expr)}"
    )


def _arithmetic(expr: BinOp, left: _Val, right: _Val) -> int | DateValue:
    op = expr.op
    try:
        if isinstance(left, DateValue):
            if op == "+" and not isinstance(right, DateValue):
                return left + _number(right, expr)
            if op == "-":
                return left - (right if isinstance(right, DateValue) else _number(right, expr))
        elif isinstance(right, DateValue) and op == "+":
            return right + _number(left, expr)
    except InvalidValueError as e:
        raise ExpressionError(f"{e} in {_where(expr)}") from None
    a = _number(left, expr)
    b = _number(right, expr)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 and (op == "/" or op == "%"):
        raise ExpressionError(f"division by zero in {_where(expr)}")
    if op == "/":
        return a // b
    if op == "%":
        return a % b
    raise ExpressionError(f"unknown operator {op!r}")


def _number(value: _Val, expr: Expr) -> int:
    if isinstance(value, int | DateValue):
        return int(value)
    raise ExpressionError(f"{_describe(value)} is not a number in {_where(expr)}")


def _kind(value: _Val) -> str:
    if isinstance(value, NodeStatus):
        return "state"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, DateValue):
        return "date"
    if isinstance(value, EventLit):
        return "event"
    return "other"


def _as_int(value: _Val) -> int:
    if isinstance(value, NodeStatus):
        return ECFLOW_STATE_VALUE[value]
    if isinstance(value, EventLit):
        return int(value.value)
    return int(value)


def _describe(value: object) -> str:
    if isinstance(value, NodeStatus):
        return f"state {value.value}"
    if isinstance(value, EventLit):
        return f"event literal {'set' if value.value else 'clear'}"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, DateValue):
        return f"date {value}"
    return f"value {value!r}"


def _where(expr: Expr) -> str:
    try:
        return repr(format_expression(expr))
    except ExpressionError:
        return repr(expr)


# ------------------------------------------------------------------ explain


class _Unresolved(Exception):
    """A reference whose resolver raised; `explain` reports it once."""


def explain(expr: Expr, resolve: Resolver) -> list[str]:
    """Why ``expr`` does not hold: one line per unsatisfied comparison.

    Each line names the leaf and the current value of what it references,
    e.g. ``"/f/t1 == complete" is false: /f/t1 is queued``. Under ``not`` the
    culprit is a leaf that is true. A reference the resolver cannot resolve
    gives ``path: <error message>``.

    Returns:
        ``[]`` when ``expr`` holds.
    """
    values: dict[NodeRef | AttrRef, Value] = {}
    errors: dict[NodeRef | AttrRef, Exception] = {}

    def cached(ref: NodeRef | AttrRef) -> Value:
        if ref in values:
            return values[ref]
        if ref not in errors:
            try:
                values[ref] = resolve(ref)
                return values[ref]
            except Exception as e:  # a diagnosis reports failures, it does not stop at them
                errors[ref] = e
        raise _Unresolved

    lines: list[str] = []
    reported: set[NodeRef | AttrRef] = set()

    def walk(node: Expr, want: bool) -> None:
        try:
            if _truth(_value(node, cached), node) is want:
                return
            failure = None
        except _Unresolved:
            failure = ""
        except ExpressionError as e:
            failure = str(e)
        if isinstance(node, BinOp) and node.op in ("and", "or"):
            for operand in _chain(node):
                walk(operand, want)
            return
        if isinstance(node, Not):
            walk(node.operand, not want)
            return
        text = format_expression(node)
        refs = references(node)
        for ref in refs:
            if ref not in values and ref not in errors:
                try:
                    cached(ref)
                except _Unresolved:
                    pass
        for ref in refs:
            if ref in errors and ref not in reported:
                reported.add(ref)
                lines.append(f"{ref_text(ref)}: {errors[ref]}")
        if failure:
            lines.append(f'"{text}" cannot be evaluated: {failure}')
        elif failure is None:
            known = [f"{ref_text(r)} is {_show(r, values[r])}" for r in refs if r in values]
            detail = ": " + ", ".join(known) if known else ""
            lines.append(f'"{text}" is {"false" if want else "true"}{detail}')

    walk(expr, True)
    return lines


def _show(ref: NodeRef | AttrRef, value: Value) -> str:
    if isinstance(value, bool):
        return "set" if value else "clear"
    return str(value)
