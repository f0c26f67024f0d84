from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from takler.core.calendar import DateValue
from takler.core.errors import ExpressionError, ExpressionSyntaxError, NodeNotFoundError
from takler.core.expr_parser import BINARY_OPS, MAX_DEPTH
from takler.core.expression import (
    AttrRef,
    BinOp,
    EventLit,
    Expr,
    IntLit,
    Neg,
    NodeRef,
    Not,
    StateLit,
    Value,
    evaluate,
    explain,
    format_expression,
    parse_expression,
    references,
)
from takler.core.status import NodeStatus

S = NodeStatus


def ref(text: str) -> NodeRef | AttrRef:
    path, sep, name = text.rpartition(":")
    return AttrRef(path, name) if sep else NodeRef(text)


def resolver(values: dict[str, Value]):
    """Resolve references written as text; unknown ones raise NodeNotFoundError."""
    table = {ref(k): v for k, v in values.items()}

    def resolve(r: NodeRef | AttrRef) -> Value:
        try:
            return table[r]
        except KeyError:
            text = f"{r.path}:{r.name}" if isinstance(r, AttrRef) else r.path
            raise NodeNotFoundError(f"no node {text}") from None

    return resolve


def ev(text: str, **values: Value) -> bool:
    return evaluate(
        parse_expression(text), resolver({k.replace("__", ":"): v for k, v in values.items()})
    )


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("a == b", "=="),
        ("a eq b", "=="),
        ("a != b", "!="),
        ("a ne b", "!="),
        ("a < b", "<"),
        ("a lt b", "<"),
        ("a <= b", "<="),
        ("a le b", "<="),
        ("a > b", ">"),
        ("a GT b", ">"),
        ("a >= b", ">="),
        ("a ge b", ">="),
        ("a and b", "and"),
        ("a && b", "and"),
        ("a AND b", "and"),
        ("a or b", "or"),
        ("a || b", "or"),
        ("a Or b", "or"),
        ("a + b", "+"),
        ("a - b", "-"),
        ("a * b", "*"),
        ("a / b", "/"),
        ("a % b", "%"),
    ],
)
def test_binary_operators_and_word_forms(text: str, op: str) -> None:
    assert parse_expression(text) == BinOp(op, NodeRef("a"), NodeRef("b"))


@pytest.mark.parametrize("text", ["not a", "!a", "NOT a", "! a"])
def test_not_forms(text: str) -> None:
    assert parse_expression(text) == Not(NodeRef("a"))


def test_unary_minus() -> None:
    assert parse_expression("-3") == Neg(IntLit(3))
    assert parse_expression("a - -b") == BinOp("-", NodeRef("a"), Neg(NodeRef("b")))
    assert parse_expression("--a") == Neg(Neg(NodeRef("a")))


def test_precedence() -> None:
    a, b, c, d = (NodeRef(x) for x in "abcd")
    assert parse_expression("a or b and c") == BinOp("or", a, BinOp("and", b, c))
    assert parse_expression("a and b or c") == BinOp("or", BinOp("and", a, b), c)
    assert parse_expression("not a == b") == Not(BinOp("==", a, b))
    assert parse_expression("not a and b") == BinOp("and", Not(a), b)
    assert parse_expression("a == b + c") == BinOp("==", a, BinOp("+", b, c))
    assert parse_expression("a + b * c") == BinOp("+", a, BinOp("*", b, c))
    assert parse_expression("a - b - c") == BinOp("-", BinOp("-", a, b), c)
    assert parse_expression("-a * b") == BinOp("*", Neg(a), b)
    assert parse_expression("(a or b) and c") == BinOp("and", BinOp("or", a, b), c)
    assert parse_expression("a < b or c >= d") == BinOp("or", BinOp("<", a, b), BinOp(">=", c, d))


@pytest.mark.parametrize(
    "path", ["/flow/fam/task", "./x", "../x", "../../f/x", "x", "fam/t_1", "a.b/c", "/f/10", "10x"]
)
def test_paths(path: str) -> None:
    assert parse_expression(path) == NodeRef(path)
    assert parse_expression(f"{path} == complete") == BinOp(
        "==", NodeRef(path), StateLit(S.complete)
    )


def test_slash_rule() -> None:
    a, b = NodeRef("a"), NodeRef("b")
    assert parse_expression("a/b") == NodeRef("a/b")
    assert parse_expression("a / b") == BinOp("/", a, b)
    assert parse_expression("a /b") == BinOp("/", a, b)
    assert parse_expression("(a)/b") == BinOp("/", a, b)
    assert parse_expression("10/2") == BinOp("/", IntLit(10), IntLit(2))
    assert parse_expression("t:m/2") == BinOp("/", AttrRef("t", "m"), IntLit(2))
    assert parse_expression("a / /f/t") == BinOp("/", a, NodeRef("/f/t"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("t1:ev", AttrRef("t1", "ev")),
        ("/s/f/t1:YMD", AttrRef("/s/f/t1", "YMD")),
        ("../f:YMD", AttrRef("../f", "YMD")),
        ("./t:m", AttrRef("./t", "m")),
        ("t1:1", AttrRef("t1", "1")),
        ("t1 : ev", AttrRef("t1", "ev")),
        ("complete:x", AttrRef("complete", "x")),
        ("10:ev", AttrRef("10", "ev")),
    ],
)
def test_attribute_references(text: str, expected: AttrRef) -> None:
    assert parse_expression(text) == expected


def test_literals() -> None:
    for state in NodeStatus:
        assert parse_expression(state.value.upper()) == StateLit(state)
    assert parse_expression("set") == EventLit(True)
    assert parse_expression("CLEAR") == EventLit(False)
    assert parse_expression("42") == IntLit(42)
    assert parse_expression("./complete") == NodeRef("./complete")
    assert parse_expression("/f/set") == NodeRef("/f/set")


def test_identical_texts_share_one_tree() -> None:
    assert parse_expression("t1 == complete") is parse_expression("t1 == complete")


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("t1 ==", 5, "an operand"),
        ("(t1 == complete", 15, "')'"),
        ("t1 == complete)", 14, "end of expression"),
        ("== complete", 0, "an operand"),
        ("t1 :", 4, "an attribute name after ':'"),
        ("t1:", 3, "an attribute name after ':'"),
        ("t1 === x", 5, "an operand"),
        ("and", 0, "an operand"),
        ("", 0, "an operand"),
        ("   ", 3, "an operand"),
        ("t1 complete", 3, "an operator or end of expression"),
        ("(a b)", 3, "an operator or ')'"),
        ("a == b == c", 7, "comparisons do not chain"),
        ("a/ b", 2, "a name after '/'"),
        ("a/../b", 2, "a name after '/'"),
        ("a & b", 2, "an operator or end of expression"),
        ("a == not b", 5, "an operand"),
        ("a ==\n", 5, "an operand"),
        ("1" * 101, 0, "at most 100 digits"),
        ("(" * (MAX_DEPTH + 5) + "a" + ")" * (MAX_DEPTH + 5), MAX_DEPTH + 1, "nested"),
    ],
)
def test_syntax_errors(text: str, position: int, expected: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_expression(text)
    assert info.value.position == position
    assert expected in info.value.expected
    assert info.value.text == text
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("t1 eq complete AND NOT t2 == ABORTED", "t1 == complete and not t2 == aborted"),
        ("a && b || !c", "a and b or not c"),
        ("(a and b) or c", "a and b or c"),
        ("a and (b or c)", "a and (b or c)"),
        ("((a))", "a"),
        ("(a - b) - c", "a - b - c"),
        ("a - (b - c)", "a - (b - c)"),
        ("-(a + b)", "-(a + b)"),
        ("a/b == 10/2", "a/b == 10 / 2"),
        ("not (a == b)", "not a == b"),
        ("(not a) == b", "(not a) == b"),
        ("(a == b) == c", "(a == b) == c"),
        ("t1 : ev==set", "t1:ev == set"),
    ],
)
def test_format_is_canonical(text: str, canonical: str) -> None:
    assert format_expression(parse_expression(text)) == canonical
    assert parse_expression(canonical) == parse_expression(text)


@pytest.mark.parametrize(
    "expr",
    [
        NodeRef("complete"),
        NodeRef("10"),
        NodeRef("a b"),
        NodeRef("a/../b"),
        AttrRef("t", ""),
        IntLit(-1),
        BinOp("^", IntLit(1), IntLit(2)),
    ],
)
def test_format_refuses_trees_that_would_not_read_back(expr: Expr) -> None:
    with pytest.raises(ExpressionError):
        format_expression(expr)


def test_long_generated_chains_do_not_recurse_per_term() -> None:
    text = " and ".join(f"t{i} == complete" for i in range(3000))
    expr = parse_expression(text)
    assert format_expression(expr) == text
    assert len(references(expr)) == 3000
    assert evaluate(expr, lambda r: S.complete)
    assert explain(expr, lambda r: S.queued if r == NodeRef("t7") else S.complete) == [
        '"t7 == complete" is false: t7 is queued'
    ]


# ---------------------------------------------------------------- references


def test_references_in_order_without_duplicates() -> None:
    expr = parse_expression("b == complete and a:ev == set or b == aborted and ../c:m + a:ev > 1")
    assert references(expr) == [NodeRef("b"), AttrRef("a", "ev"), AttrRef("../c", "m")]
    assert references(parse_expression("complete == 1")) == []


# ---------------------------------------------------------------- evaluation


def test_state_comparisons() -> None:
    assert ev("t1 == complete", t1=S.complete)
    assert not ev("t1 == complete", t1=S.queued)
    assert ev("t1 != complete", t1=S.queued)
    assert ev("t1 eq t2", t1=S.active, t2=S.active)
    # ECFLOW_STATE_VALUE order: unknown complete queued aborted submitted active suspended
    assert ev("t1 < active", t1=S.queued)
    assert ev("t1 > queued", t1=S.aborted)
    assert not ev("t1 >= submitted", t1=S.aborted)
    assert ev("t1 <= complete", t1=S.unknown)


def test_state_against_integer_uses_ecflow_values() -> None:
    assert ev("t1 == 2", t1=S.queued)
    assert ev("1 == t1", t1=S.complete)
    assert ev("t1 > 4", t1=S.active)


def test_events() -> None:
    assert ev("t1:ev == set", t1__ev=True)
    assert ev("t1:ev == clear", t1__ev=False)
    assert ev("t1:ev != set", t1__ev=False)
    assert ev("set == t1:ev", t1__ev=True)
    assert ev("t1:1", t1__1=True)
    assert ev("t1:ev == 1 and t2:ev == 0", t1__ev=True, t2__ev=False)


def test_meters_variables_and_arithmetic() -> None:
    assert ev("t1:m >= 10", t1__m=10)
    assert ev("t1:m + 2 * 3 == 16", t1__m=10)
    assert ev("(t1:m + 2) * 3 == 36", t1__m=10)
    assert ev("7 / 2 == 3 and 7 % 2 == 1 and -7 / 2 == -4 and 7 - 10 == -3")
    assert ev("t1:ev + t2:ev == 1", t1__ev=True, t2__ev=False)
    assert ev("(a == complete) + (b == complete) >= 1", a=S.complete, b=S.queued)


def test_date_arithmetic() -> None:
    ymd = DateValue(20201231)
    assert ev("../f:YMD + 1 == 20210101", **{"../f__YMD": ymd})
    assert ev("1 + ../f:YMD == 20210101", **{"../f__YMD": ymd})
    assert ev("../f:YMD - 365 == 20200101", **{"../f__YMD": ymd})
    assert ev("f:A - f:B == 366", f__A=ymd, f__B=DateValue(20191231))
    assert ev("f:YMD % 100 == 31 and f:YMD / 10000 == 2020", f__YMD=ymd)
    assert ev("f:YMD > 20201230 and f:YMD < f:B", f__YMD=ymd, f__B=DateValue(20210101))


def test_bare_operands_as_conditions() -> None:
    assert ev("t1", t1=S.complete)
    assert not ev("t1", t1=S.active)
    assert ev("t1:ev", t1__ev=True)
    assert not ev("t1:m", t1__m=0)
    assert ev("t1:m", t1__m=-2)
    assert ev("f:YMD", f__YMD=DateValue(20200101))
    assert ev("not t1", t1=S.aborted)
    assert ev("set") and not ev("clear")


@pytest.mark.parametrize(
    "text",
    [
        "set + 1",
        "t1 == set",
        "t1 + 1 == 2",
        "t1:ev < set",
        "t1 == t1:ev",
        "f:YMD == set",
        "f:YMD == t1",
        "1 / 0 == 1",
        "t1:m % 0",
        "-set",
    ],
)
def test_type_errors_and_division_by_zero(text: str) -> None:
    resolve = resolver({"t1": S.complete, "t1:ev": True, "t1:m": 3, "f:YMD": DateValue(20200101)})
    with pytest.raises(ExpressionError) as info:
        evaluate(parse_expression(text), resolve)
    assert "in '" in str(info.value)


def test_and_or_short_circuit() -> None:
    resolve = resolver({"a": S.complete})
    assert evaluate(parse_expression("a == complete or missing == complete"), resolve)
    assert not evaluate(parse_expression("a == queued and missing == complete"), resolve)


def test_resolver_errors_propagate_unchanged() -> None:
    error = NodeNotFoundError("no node missing")

    def resolve(r: NodeRef | AttrRef) -> Value:
        raise error

    with pytest.raises(NodeNotFoundError) as info:
        evaluate(parse_expression("1 == 1 and missing == complete"), resolve)
    assert info.value is error


# ---------------------------------------------------------------- explain


def test_explain_true_is_empty() -> None:
    assert explain(parse_expression("t1 == complete"), resolver({"t1": S.complete})) == []


def test_explain_names_unsatisfied_leaves_and_values() -> None:
    resolve = resolver({"/f/t1": S.queued, "t1:ev": False, "t2:m": 3, "t3": S.complete})
    expr = parse_expression("/f/t1 == complete and (t1:ev == set or t2:m > 5) and t3 == complete")
    assert explain(expr, resolve) == [
        '"/f/t1 == complete" is false: /f/t1 is queued',
        '"t1:ev == set" is false: t1:ev is clear',
        '"t2:m > 5" is false: t2:m is 3',
    ]


def test_explain_not_and_constants() -> None:
    resolve = resolver({"t1": S.active})
    assert explain(parse_expression("not t1 == active"), resolve) == [
        '"t1 == active" is true: t1 is active'
    ]
    assert explain(parse_expression("1 == 2"), resolve) == ['"1 == 2" is false']


def test_explain_reports_resolver_and_type_errors() -> None:
    resolve = resolver({"t1": S.queued})
    expr = parse_expression("t9 == complete and t9:ev == set and t1 == set")
    lines = explain(expr, resolve)
    assert lines[0] == "t9: no node t9"
    assert lines[1] == "t9:ev: no node t9:ev"
    assert lines[2].startswith('"t1 == set" cannot be evaluated: cannot compare state queued')
    assert len(lines) == 3


# ---------------------------------------------------------------- properties

_KEYWORDS = {s.value for s in NodeStatus} | {
    "set", "clear", "not", "and", "or", "eq", "ne", "lt", "le", "gt", "ge",
}  # fmt: skip
_first = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,5}", fullmatch=True)
_segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.]{0,5}", fullmatch=True)


@st.composite
def _paths(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "/", "./", "../", "../../"]))
    first = draw(_first if prefix == "" else _segment)
    rest = draw(st.lists(_segment, max_size=2))
    if prefix == "" and not rest and first.lower() in _KEYWORDS:
        first = f"{first}_"
    return prefix + "/".join([first, *rest])


_leaves = st.one_of(
    st.builds(NodeRef, _paths()),
    st.builds(AttrRef, _paths(), _segment),
    st.builds(StateLit, st.sampled_from(list(NodeStatus))),
    st.builds(EventLit, st.booleans()),
    st.builds(IntLit, st.integers(min_value=0, max_value=10**12)),
)
_exprs = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(Neg, inner),
        st.builds(BinOp, st.sampled_from(sorted(BINARY_OPS)), inner, inner),
    ),
    max_leaves=16,
)


@given(_exprs)
def test_format_parse_round_trip(expr: Expr) -> None:
    text = format_expression(expr)
    assert parse_expression(text) == expr
    assert format_expression(parse_expression(text)) == text


_pieces = st.sampled_from(
    ["t1", "/f/t", "../x", "./y", "a/b", ":", "ev", "1", "20", "(", ")", "==", "=", "!", "!=",
     "<", ">=", "and", "OR", "not", "&&", "||", "&", "+", "-", "*", "/", "%", "complete",
     "set", "clear", " ", ".", "..", "\t", "é"]
)  # fmt: skip


@given(st.one_of(st.text(max_size=40), st.lists(_pieces, max_size=20).map("".join)))
def test_random_text_only_ever_raises_syntax_errors(text: str) -> None:
    try:
        expr = parse_expression(text)
    except ExpressionSyntaxError as e:
        assert 0 <= e.position <= len(text)
    else:
        assert parse_expression(format_expression(expr)) == expr
