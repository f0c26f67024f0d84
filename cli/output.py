"""What the command line prints: results, ``--json`` data and one-line errors.

Every failure leaves as one line on stderr and an exit code, never a
traceback: 0 ok, 1 refused, 2 usage, 3 server error, 4 unreachable.
"""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_SERVER_ERROR = 3
EXIT_UNREACHABLE = 4


class CliExit(Exception):
    """Leave the command with ``code`` after printing ``message`` (if any) on stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def one_line(text: object) -> str:
    """``text`` squeezed to a single line."""
    return " ".join(str(text).split())


def exit_code_for(exc: BaseException) -> int:
    """The exit code an exception maps to."""
    if isinstance(exc, CliExit):
        return exc.code
    # Imported here: the client pulls in Trio, which `takler child` must not pay for.
    from takler.client.client import RemoteError, UnreachableError

    if isinstance(exc, UnreachableError):
        return EXIT_UNREACHABLE
    if isinstance(exc, RemoteError):
        return EXIT_SERVER_ERROR if exc.code == "server_error" else EXIT_REFUSED
    if isinstance(exc, ConnectionError):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def describe(exc: BaseException) -> str:
    """A one-line description of ``exc`` for the user."""
    from takler.client.client import RemoteError

    text = one_line(str(exc) or type(exc).__name__)
    if isinstance(exc, RemoteError) and exc.code != "server_error" and exc.code not in text:
        text = f"{text} ({exc.code})"
    return text


def error_line(message: str) -> None:
    print(one_line(message), file=sys.stderr)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (what ``--json`` gives scripts)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[str], empty: str = "(none)") -> None:
    """Print ``rows`` as aligned plain-text columns."""
    if not rows:
        print(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return one_line(value)
