"""Attributes a node carries: events, meters, labels, limits, inlimits, triggers."""

from __future__ import annotations

import re
from typing import Any

import attrs

from takler.core.errors import InvalidNameError, InvalidValueError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
MAX_NAME = 256


# Names seen valid: a big flow repeats a few names (t0, t1... V) many times, and
# a set lookup costs a fraction of the match. Bounded: cleared when full.
_VALID: set[str] = set()
_VALID_MAX = 1 << 16


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is a valid node or attribute name.

    Raises:
        InvalidNameError: empty, too long, or with characters outside ``[A-Za-z0-9_.-]``.
    """
    if type(name) is str and name in _VALID:
        return name
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"{what} is longer than {MAX_NAME} characters")
    if not _NAME.match(name) or name in (".", ".."):
        raise InvalidNameError(
            f"bad {what} {name!r}: use letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )
    if type(name) is str:  # not a subclass, whose equality could differ
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID.add(name)
    return name


@attrs.define(eq=False)
class Event:
    """A named flag a job sets or clears; ecFlow events may also carry a number."""

    name: str
    number: int | None = None
    initial: bool = False
    value: bool = False

    def reset(self) -> None:
        self.value = self.initial


@attrs.define(eq=False)
class Meter:
    """An integer progress gauge in ``[minimum, maximum]``."""

    name: str
    minimum: int
    maximum: int
    threshold: int | None = None
    value: int = 0

    def check(self, value: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValueError(f"meter {self.name}: value must be an integer, not {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise InvalidValueError(
                f"meter {self.name}: {value} is outside [{self.minimum}, {self.maximum}]"
            )
        return value

    def reset(self) -> None:
        self.value = self.minimum


@attrs.define(eq=False)
class Label:
    """Free text a job shows to operators."""

    name: str
    default: str = ""
    value: str = ""

    def reset(self) -> None:
        self.value = self.default


@attrs.define(eq=False)
class Limit:
    """A pool of ``maximum`` tokens shared by the tasks that name it in an inlimit.

    ``holders`` maps a holder path (a task, or a family for ``inlimit -n``) to
    the tokens it holds. ``waiting`` keeps the tasks that were ready but found
    no room, in order, so a release looks only at them.
    """

    name: str
    maximum: int
    holders: dict[str, int] = attrs.Factory(dict)
    waiting: dict[str, None] = attrs.field(factory=dict, repr=False)

    @property
    def value(self) -> int:
        return sum(self.holders.values())

    def has_room(self, holder: str, tokens: int) -> bool:
        if holder in self.holders:
            return True
        return self.value + tokens <= self.maximum


@attrs.define(eq=False)
class InLimit:
    """A node's claim on a limit: ``path`` is empty for "search up the tree"."""

    name: str
    path: str = ""
    tokens: int = 1
    node_only: bool = False
    submission_only: bool = False

    @property
    def spec(self) -> str:
        return f"{self.path}:{self.name}" if self.path else self.name

    @classmethod
    def parse(cls, spec: str, tokens: int = 1, **flags: Any) -> InLimit:
        spec = spec.strip()
        path, sep, name = spec.rpartition(":")
        check_name(name, "limit name")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise InvalidValueError(f"inlimit {spec}: tokens must be a positive integer")
        return cls(name=name, path=path if sep else "", tokens=tokens, **flags)


@attrs.define(eq=False)
class ExprAttr:
    """A trigger or complete expression: its text, parsed tree and resolved paths.

    ``freed`` is the operator's free-dep latch, cleared by requeue.
    """

    expr: Any
    freed: bool = False
    #: the absolute path each reference of ``expr`` names, in the order of
    #: ``references_of(expr)``, while the bunch's index holds the node (else
    #: empty). A tuple, not a dict by reference: a big flow has one per node.
    targets: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def abs_paths(self) -> dict[Any, str]:
        """Each reference -> the absolute path it names, while indexed (a new dict)."""
        from takler.core.expression import references_of

        return dict(zip(references_of(self.expr), self.targets, strict=False))

    @property
    def text(self) -> str:
        from takler.core.expression import format_expression

        return format_expression(self.expr)
