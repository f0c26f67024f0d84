"""The .def lexer: statements, comments, quotes, ';' and '\\' continuations."""

import pytest

from takler.core.errors import DefinitionError
from takler.ecflow.deflexer import Statement, dequote, lex


def kw_args(text: str) -> list[tuple[int, str, tuple[str, ...]]]:
    return [(s.line, s.keyword, s.args) for s in lex(text)]


def test_one_statement_per_line_with_line_numbers() -> None:
    assert kw_args("suite s\n\n  task t  \nendsuite\n") == [
        (1, "suite", ("s",)),
        (3, "task", ("t",)),
        (4, "endsuite", ()),
    ]


def test_comments_are_kept_apart() -> None:
    got = lex("# header\nsuite s   # a comment\n  # whole line\nendsuite")
    assert got == [
        Statement(2, "suite", ("s",), "a comment"),
        Statement(4, "endsuite", (), None),
    ]


def test_hash_inside_a_token_or_quotes_is_not_a_comment() -> None:
    got = lex("edit A '#'\nedit B a#b\nlabel l \"x # y\"")
    assert [s.args for s in got] == [("A", "'#'"), ("B", "a#b"), ("l", '"x # y"')]
    assert all(s.comment is None for s in got)


def test_semicolons_split_statements_on_one_line() -> None:
    assert kw_args("suite s; task a;task b; endsuite # c; d") == [
        (1, "suite", ("s",)),
        (1, "task", ("a",)),
        (1, "task", ("b",)),
        (1, "endsuite", ()),
    ]


def test_semicolons_inside_quotes_stay() -> None:
    got = lex('task t ; label foo "a; b"')
    assert [(s.keyword, s.args) for s in got] == [("task", ("t",)), ("label", ("foo", '"a; b"'))]


def test_edit_line_with_a_semicolon_in_the_value_is_one_variable() -> None:
    assert kw_args("edit CMD a;b") == [(1, "edit", ("CMD", "a;b"))]
    assert kw_args("edit A 1; edit B 2") == [(1, "edit", ("A", "1")), (1, "edit", ("B", "2"))]


def test_state_form_does_not_split_semicolons() -> None:
    got = kw_args("defs_state MIGRATE\nedit X a;b")
    assert got[1] == (2, "edit", ("X", "a;b"))


def test_quoted_token_keeps_spaces_and_inner_quotes() -> None:
    (st,) = lex("edit OWNER 'it's  mine'  # c")
    assert st.args == ("OWNER", "'it's  mine'")
    assert dequote(st.args[1]) == "it's  mine"


def test_dequote_strips_double_then_single_quotes() -> None:
    assert dequote("'\"fred\"'") == '"fred"'
    assert dequote("\"'fred'\"") == "fred"
    assert dequote('""') == ""
    assert dequote('"abc') == '"abc'


def test_trigger_continues_over_backslash_lines() -> None:
    text = "trigger a == complete and \\\n   b == complete and\\\n   c == complete\ntask x"
    got = lex(text)
    assert got[0] == Statement(
        1,
        "trigger",
        ("a", "==", "complete", "and", "b", "==", "complete", "and", "c", "==", "complete"),
    )
    assert got[1].line == 4


def test_continuation_past_the_end_is_refused_with_its_line() -> None:
    with pytest.raises(DefinitionError, match=r"x\.def:2: trigger continues past the end"):
        lex("suite s\ntrigger a == complete \\", "x.def")
