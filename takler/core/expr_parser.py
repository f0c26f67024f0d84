"""The syntax of trigger and complete expressions: AST, tokenizer, parser, formatter.

The language is described in :mod:`takler.core.expression`, which re-exports
everything public here.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TypeAlias

import attrs

from takler.core.errors import ExpressionError, ExpressionSyntaxError
from takler.core.status import NodeStatus


# Trees are hashed often (the format and parse caches key on them): hash once.
@attrs.frozen(cache_hash=True)
class NodeRef:
    """A node by absolute or relative path; its value is the node's state."""

    path: str


@attrs.frozen(cache_hash=True)
class AttrRef:
    """``path:name``: an event, meter, variable, repeat or limit of a node."""

    path: str
    name: str


@attrs.frozen(cache_hash=True)
class StateLit:
    """A state literal such as ``complete``."""

    state: NodeStatus


@attrs.frozen(cache_hash=True)
class EventLit:
    """``set`` (True) or ``clear`` (False)."""

    value: bool


@attrs.frozen(cache_hash=True)
class IntLit:
    """A non-negative integer literal."""

    value: int


@attrs.frozen(cache_hash=True)
class Not:
    """``not operand``."""

    operand: Expr


@attrs.frozen(cache_hash=True)
class Neg:
    """``-operand``."""

    operand: Expr


@attrs.frozen(cache_hash=True)
class BinOp:
    """A binary operation; ``op`` is one of :data:`BINARY_OPS`."""

    op: str
    left: Expr
    right: Expr


Expr: TypeAlias = NodeRef | AttrRef | StateLit | EventLit | IntLit | Not | Neg | BinOp

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
BINARY_OPS = frozenset({*COMPARISONS, "and", "or", "+", "-", "*", "/", "%"})

# Binding strength of each operator (higher binds tighter); `not` is 3, unary minus 7.
_PREC = {
    "or": 1,
    "and": 2,
    **dict.fromkeys(COMPARISONS, 4),
    "+": 5,
    "-": 5,
    "*": 6,
    "/": 6,
    "%": 6,
}
_CMP_PREC = 4
# Nesting (parentheses, prefix operators, right operands) is bounded so that
# every recursive walk of a tree stays far from Python's recursion limit.
MAX_DEPTH = 200
_NOT_PREC = 3
_NEG_PREC = 7

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.]*"
# Alternatives are tried in order: an integer only when not glued to a name,
# then a path (with an optional `:attr`), then a symbol, then the end.
_TOKEN = re.compile(
    rf"""\s*(?:
        (?P<int>[0-9]+)(?![A-Za-z0-9_.]|\s*:)
      | (?P<path>(?:/|(?:\.\.?/)+)?{_NAME}(?:/{_NAME})*)(?P<colon>\s*:\s*(?P<attr>{_NAME})?)?
      | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()+\-*/%])
      | (?P<end>\Z)
      | (?P<bad>.)
    )""",
    re.VERBOSE | re.DOTALL,
)

# Token: (kind, leaf or None, position). Operator tokens use the canonical
# operator as their kind; the other kinds are leaf, not, (, ), end and bad.
Token: TypeAlias = tuple[str, Expr | None, int]

_SYMBOLS = {
    "&&": "and",
    "||": "or",
    "!": "not",
    **{s: s for s in ("==", "!=", "<=", ">=", "<", ">", "(", ")", "+", "-", "*", "/", "%")},
}
_KEYWORDS: dict[str, tuple[str, Expr | None]] = {
    **{s.value: ("leaf", StateLit(s)) for s in NodeStatus},
    "set": ("leaf", EventLit(True)),
    "clear": ("leaf", EventLit(False)),
    "not": ("not", None),
    "and": ("and", None),
    "or": ("or", None),
    "eq": ("==", None),
    "ne": ("!=", None),
    "lt": ("<", None),
    "le": ("<=", None),
    "gt": (">", None),
    "ge": (">=", None),
}


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token (or ``bad`` then ``end``).

    Raises:
        ExpressionSyntaxError: a ``:`` without a name, or a ``/`` glued after a
            path but not followed by a name.
    """
    tokens: list[Token] = []
    append = tokens.append
    match = _TOKEN.match
    pos = 0
    operand = True  # an operand is expected next: a leading `/` starts a path
    path_end = -1  # where the last bare node path ended
    while True:
        m = match(text, pos)
        assert m is not None  # the `bad` alternative matches any character
        group = m.lastgroup
        pos = m.end()
        if group == "path" or group == "colon":
            path = m["path"]
            start = m.start("path")
            if not operand and path[0] == "/":
                # After an operand a leading slash divides: `a /b`, `(a)/b`.
                append(("/", None, start))
                pos = start + 1
                operand = True
                continue
            if group == "colon":
                attr = m["attr"]
                if attr is None:
                    raise ExpressionSyntaxError(text, pos, "an attribute name after ':'")
                append(("leaf", AttrRef(path, attr), start))
            else:
                keyword = None if "/" in path else _KEYWORDS.get(path.lower())
                if keyword is None:
                    append(("leaf", NodeRef(path), start))
                    path_end = pos
                else:
                    append((keyword[0], keyword[1], start))
        elif group == "op":
            kind = _SYMBOLS[m["op"]]
            start = m.start("op")
            if kind == "/" and start == path_end:
                raise ExpressionSyntaxError(text, start + 1, "a name after '/'")
            append((kind, None, start))
        elif group == "int":
            digits = m["int"]
            if len(digits) > 100:  # int() refuses very long digit strings anyway
                raise ExpressionSyntaxError(
                    text, m.start("int"), "an integer of at most 100 digits"
                )
            append(("leaf", IntLit(int(digits)), m.start("int")))
        elif group == "end":
            append(("end", None, len(text)))
            return tokens
        else:
            append(("bad", None, m.start("bad")))
            append(("end", None, len(text)))
            return tokens
        operand = tokens[-1][0] not in ("leaf", ")")


class _Parser:
    """Precedence climbing over the token list."""

    __slots__ = ("i", "text", "tokens")

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    def fail(self, expected: str) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(self.text, self.tokens[self.i][2], expected)

    def parse(self) -> Expr:
        expr = self.expr(0, 0)
        kind = self.tokens[self.i][0]
        if kind != "end":
            raise self.fail(
                "end of expression" if kind == ")" else "an operator or end of expression"
            )
        return expr

    def expr(self, min_prec: int, depth: int) -> Expr:
        """An operand, then binary operators binding at least as tight as ``min_prec``."""
        if depth > MAX_DEPTH:
            raise self.fail(f"an expression nested at most {MAX_DEPTH} deep")
        depth += 1
        tokens = self.tokens
        kind, leaf, _ = tokens[self.i]
        self.i += 1
        if kind == "leaf":
            assert leaf is not None
            left: Expr = leaf
        elif kind == "(":
            left = self.expr(0, depth)
            kind = tokens[self.i][0]
            if kind != ")":
                raise self.fail("')'" if kind == "end" else "an operator or ')'")
            self.i += 1
        elif kind == "-":
            left = Neg(self.expr(_NEG_PREC, depth))
        elif kind == "not" and min_prec <= _NOT_PREC:
            left = Not(self.expr(_NOT_PREC, depth))
        else:
            self.i -= 1
            raise self.fail("an operand")
        compared = False
        while True:
            op = tokens[self.i][0]
            prec = _PREC.get(op)
            if prec is None or prec < min_prec:
                return left
            if prec == _CMP_PREC:
                if compared:
                    raise self.fail("'and', 'or' or parentheses (comparisons do not chain)")
                compared = True
            self.i += 1
            left = BinOp(op, left, self.expr(prec + 1, depth))


@lru_cache(maxsize=1 << 16)
def parse_cached(text: str) -> Expr:
    """Parse ``text``; identical texts share one (immutable) tree."""
    return _Parser(text, tokenize(text)).parse()


def format_expression(expr: Expr) -> str:
    """Canonical text of ``expr``: word operators, symbol comparisons, minimal parentheses.

    Raises:
        ExpressionError: ``expr`` is not a well-formed tree (unknown operator,
            a path that would not read back as itself...).
    """
    return _format(expr, 0)


def _format(expr: Expr, need: int) -> str:
    kind = type(expr)
    if kind is BinOp:
        assert isinstance(expr, BinOp)
        prec = _PREC.get(expr.op)
        if prec is None:
            raise ExpressionError(f"unknown operator {expr.op!r}")
        if prec == _CMP_PREC:  # comparisons do not associate
            text = f"{_format(expr.left, prec + 1)} {expr.op} {_format(expr.right, prec + 1)}"
        else:
            # Generated triggers chain hundreds of `and`s down the left side:
            # walk that spine in a loop, not by recursion.
            tail: list[str] = []
            node: Expr = expr
            while isinstance(node, BinOp) and _PREC.get(node.op) == prec:
                tail.append(f" {node.op} {_format(node.right, prec + 1)}")
                node = node.left
            text = _format(node, prec) + "".join(reversed(tail))
    elif kind is Not:
        assert isinstance(expr, Not)
        prec = _NOT_PREC
        text = "not " + _format(expr.operand, _NOT_PREC)
    elif kind is Neg:
        assert isinstance(expr, Neg)
        prec = _NEG_PREC
        text = "-" + _format(expr.operand, _NEG_PREC)
    else:
        return _leaf_text(expr)
    return f"({text})" if prec < need else text


def _leaf_text(expr: Expr) -> str:
    if isinstance(expr, StateLit) and isinstance(expr.state, NodeStatus):
        return expr.state.value
    if isinstance(expr, EventLit):
        return "set" if expr.value else "clear"
    if isinstance(expr, IntLit):
        value = expr.value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**100:
            return str(value)
    elif isinstance(expr, NodeRef | AttrRef):
        text = ref_text(expr)
        try:
            tokens = tokenize(text)
        except ExpressionSyntaxError:
            tokens = []
        if len(tokens) == 2 and tokens[0][1] == expr:
            return text
    raise ExpressionError(f"cannot write {expr!r} as expression text")


def ref_text(ref: NodeRef | AttrRef) -> str:
    """How a reference is written: ``path`` or ``path:name``."""
    return f"{ref.path}:{ref.name}" if isinstance(ref, AttrRef) else ref.path
