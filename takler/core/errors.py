"""The one error tree of takler.

Every error a user can cause derives from :class:`TaklerError` and from the
closest builtin, so callers may catch either.
"""

from __future__ import annotations


class TaklerError(Exception):
    """Root of every error takler raises on purpose."""

    code = "error"


class NodeNotFoundError(TaklerError, LookupError):
    """A path does not name a node."""

    code = "not_found"


class DuplicateNameError(TaklerError, ValueError):
    """A name is already taken among siblings or attributes."""

    code = "duplicate"


class InvalidNameError(TaklerError, ValueError):
    """A node or attribute name is not allowed."""

    code = "bad_name"


class AttributeNotFoundError(TaklerError, LookupError):
    """An event, meter, label, limit, repeat or variable does not exist."""

    code = "not_found"


class InvalidValueError(TaklerError, ValueError):
    """A value is out of range or of the wrong kind (meter out of range...)."""

    code = "bad_value"


class ExpressionSyntaxError(TaklerError, ValueError):
    """A trigger or complete expression does not parse.

    Attributes:
        text: the expression text.
        position: 0-based character offset of the problem.
        expected: what the parser expected there.
    """

    code = "bad_expression"

    def __init__(self, text: str, position: int, expected: str) -> None:
        self.text = text
        self.position = position
        self.expected = expected
        found = text[position : position + 12] or "end of expression"
        super().__init__(
            f"bad expression {text!r}: at position {position + 1}, expected {expected},"
            f" found {found!r}"
        )


class ExpressionError(TaklerError, ValueError):
    """An expression parses but cannot be evaluated (bad reference, type)."""

    code = "bad_expression"


class TimeSpecError(TaklerError, ValueError):
    """A time, today, date, day, cron or late specification is malformed."""

    code = "bad_time"


class RepeatError(TaklerError, ValueError):
    """A repeat specification is malformed."""

    code = "bad_repeat"


class StateError(TaklerError, RuntimeError):
    """An operation is not allowed in the node's or server's current state."""

    code = "bad_state"


class ZombieError(TaklerError, PermissionError):
    """A child command does not match the task's current submission."""

    code = "zombie"


class AuthError(TaklerError, PermissionError):
    """A request lacks the credentials its command needs."""

    code = "unauthorized"


class DefinitionError(TaklerError, ValueError):
    """A flow definition (Python data or ecFlow .def) is malformed.

    ``where`` names the file and line or the node path.
    """

    code = "bad_definition"


class UnsupportedFeatureError(DefinitionError):
    """A definition uses a feature takler does not support."""

    code = "unsupported"


class CodecError(TaklerError, ValueError):
    """Serialized data does not describe a valid bunch, flow or message."""

    code = "bad_data"
