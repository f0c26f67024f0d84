"""Split ecFlow definition text into statements with their line numbers.

ecFlow's lexical rules, kept here so the parser sees clean statements:

* a token that starts with ``#`` (outside quotes) begins a comment that runs
  to the end of the line; in the state-carrying form that comment holds the
  state (``task t # state:complete``);
* ``;`` outside quotes separates statements on one line (``task a; task b``),
  except in the state-carrying form (``defs_state`` files) and on ``edit``
  lines whose pieces are not all ``edit`` (``edit CMD a;b`` is one variable);
* a ``trigger`` or ``complete`` line ending in ``\\`` continues on the next.
"""

from __future__ import annotations

import attrs

from takler.core.errors import DefinitionError

_QUOTES = "\"'"
_CONTINUED = ("trigger", "complete")


@attrs.frozen
class Statement:
    """One statement: ``keyword args... # comment`` from line ``line`` (1-based)."""

    line: int
    keyword: str
    args: tuple[str, ...] = ()
    comment: str | None = None


def dequote(token: str) -> str:
    """Strip one pair of surrounding quotes, double then single, as ecFlow does."""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        token = token[1:-1]
    if len(token) >= 2 and token[0] == token[-1] == "'":
        token = token[1:-1]
    return token


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted token opening at ``start``, or -1 if unclosed.

    The token ends at a matching quote followed by a blank, ``;`` or the end,
    so ``'it's'`` is one token.
    """
    quote = text[start]
    pos = text.find(quote, start + 1)
    while pos != -1:
        nxt = pos + 1
        if nxt == len(text) or text[nxt].isspace() or text[nxt] == ";":
            return nxt
        pos = text.find(quote, nxt)
    return -1


def _split_line(text: str, split_semicolons: bool) -> tuple[list[list[str]], str | None]:
    """Tokens of each statement on a physical line, and the trailing comment."""
    statements: list[list[str]] = [[]]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == ";" and split_semicolons:
            statements.append([])
            i += 1
            continue
        if ch == "#":
            return [s for s in statements if s], text[i + 1 :].strip()
        end = _quoted_end(text, i) if ch in _QUOTES else -1
        if end == -1:
            end = i
            while end < n and not text[end].isspace():
                if text[end] == ";" and split_semicolons:
                    break
                end += 1
        statements[-1].append(text[i:end])
        i = end
    return [s for s in statements if s], None


def _is_state_form(lines: list[str]) -> bool:
    for raw in lines:
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        return words[0] == "defs_state"
    return False


def lex(text: str, source: str = "<string>") -> list[Statement]:
    """The statements of a definition, in order.

    Raises:
        DefinitionError: a continued trigger or complete runs past the end.
    """
    lines = text.splitlines()
    split_semicolons = not _is_state_form(lines)
    out: list[Statement] = []
    index = 0
    while index < len(lines):
        number = index + 1
        raw = lines[index]
        index += 1
        pieces, comment = _split_line(raw, split_semicolons)
        if len(pieces) > 1 and pieces[0][0] == "edit" and any(p[0] != "edit" for p in pieces):
            pieces, comment = _split_line(raw, False)
        for pos, tokens in enumerate(pieces):
            last = pos == len(pieces) - 1
            if last and tokens[0] in _CONTINUED:
                while tokens[-1].endswith("\\") and comment is None:
                    tokens[-1] = tokens[-1][:-1]
                    if not tokens[-1]:
                        tokens.pop()
                    if index >= len(lines):
                        raise DefinitionError(
                            f"{source}:{number}: {tokens[0]} continues past the end of the file"
                        )
                    more, comment = _split_line(lines[index], False)
                    index += 1
                    tokens.extend(t for piece in more for t in piece)
            out.append(
                Statement(
                    line=number,
                    keyword=tokens[0],
                    args=tuple(tokens[1:]),
                    comment=comment if last else None,
                )
            )
    return out
