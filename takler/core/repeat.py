"""Repeats: a family or task that loops over a sequence of values (ecFlow's ``repeat``).

Spec texts are what follows ``repeat`` in an ecFlow ``.def`` file:

- ``date NAME START END [STEP]``: ``yyyymmdd`` dates, STEP in days (default 1;
  negative steps count down from START >= END).
- ``datelist NAME d1 d2 ...``: any ``yyyymmdd`` dates.
- ``integer NAME START END [STEP]``: STEP non-zero and pointing from START to END.
- ``enumerated NAME v1 v2 ...`` and ``string NAME s1 s2 ...``: words, which may
  be double-quoted.
- ``day [STEP]``: ecFlow's endless ``repeat day``; its name is ``day`` and its
  value is STEP.

``index`` is the position of the current value. ``advance()`` moves to the next
value; past the last one it stays on the last value and sets ``expired``.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
import shlex
from collections.abc import Callable
from typing import ClassVar

import attrs

from takler.core.calendar import DateValue, julian_day, parse_yyyymmdd, to_yyyymmdd
from takler.core.errors import InvalidValueError, RepeatError

_STATE = {"state": True}  # marks a field as run-time state rather than spec
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _SpecProblem(RepeatError):
    """A RepeatError that also keeps the bare problem, to reword with the input text."""

    def __init__(self, problem: str, message: str | None = None) -> None:
        super().__init__(message or problem)
        self.problem = problem


def _date(value: int | str, what: str) -> dt.date:
    try:
        return parse_yyyymmdd(value)
    except InvalidValueError:
        raise _SpecProblem(f"{what} {value!r} is not a real date yyyymmdd") from None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _SpecProblem(f"{what} {text!r} is not an integer") from None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@attrs.define(eq=False, kw_only=True)
class Repeat(abc.ABC):
    """A repeat attribute; ``index`` and ``expired`` are its run-time state."""

    kind: ClassVar[str]
    name: str
    index: int = attrs.field(default=0, metadata=_STATE)
    expired: bool = attrs.field(default=False, metadata=_STATE)

    def __attrs_post_init__(self) -> None:
        try:
            if not _NAME.fullmatch(self.name):
                raise _SpecProblem(f"name {self.name!r} is not a valid variable name")
            self._check()
            count = self.count
            if self.index < 0 or (count is not None and self.index >= count):
                raise _SpecProblem(f"index {self.index} is out of range")
        except _SpecProblem as e:
            raise _SpecProblem(e.problem, f"bad repeat {self.to_text()!r}: {e.problem}") from None

    @abc.abstractmethod
    def _check(self) -> None:
        """Raise _SpecProblem when the fields do not form a valid spec."""

    @abc.abstractmethod
    def to_text(self) -> str:
        """The spec text after ``repeat``, in canonical form."""

    @property
    @abc.abstractmethod
    def count(self) -> int | None:
        """How many values there are; None for an endless repeat."""

    @abc.abstractmethod
    def _value_at(self, index: int) -> int | str:
        """The value at ``index``."""

    @property
    def value(self) -> int | str:
        """The current value: an int (``yyyymmdd`` for dates) or a str."""
        return self._value_at(self.index)

    @property
    def start_value(self) -> int | str:
        return self._value_at(0)

    @property
    def end_value(self) -> int | str | None:
        """The last value; None for an endless repeat."""
        count = self.count
        return None if count is None else self._value_at(count - 1)

    def reset(self) -> None:
        """Back to the first value (begin, requeue)."""
        self.index = 0
        self.expired = False

    def advance(self) -> bool:
        """Move to the next value; False (and ``expired``) when there is none."""
        count = self.count
        if count is not None and self.index + 1 >= count:
            self.expired = True
            return False
        self.index += 1
        return True

    def expr_value(self) -> int | DateValue:
        """The value a trigger expression sees."""
        value = self.value
        return value if isinstance(value, int) else self.index

    def variables(self) -> dict[str, str]:
        """The generated variables: ``NAME`` is the current value."""
        return {self.name: str(self.value)}

    def set_value(self, text: str) -> None:
        """Make ``text`` the current value (the operator's alter).

        Raises:
            RepeatError: ``text`` is not one of the values.
        """
        self.index = self._index_of(text.strip())
        self.expired = False

    @abc.abstractmethod
    def _index_of(self, text: str) -> int:
        """The index of the value ``text``, or RepeatError."""

    def _not_a_value(self, text: str) -> RepeatError:
        return RepeatError(f"repeat {self.kind} {self.name}: {text!r} is not one of its values")

    def same_spec(self, other: object) -> bool:
        """Whether ``other`` is the same kind with the same spec (state ignored)."""
        return type(other) is type(self) and all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in attrs.fields(type(self))
            if not f.metadata.get("state")
        )


def _date_variables(name: str, yyyymmdd: int) -> dict[str, str]:
    day = parse_yyyymmdd(yyyymmdd)
    return {
        name: str(yyyymmdd),
        f"{name}_YYYY": str(day.year),
        f"{name}_MM": str(day.month),
        f"{name}_DD": str(day.day),
        f"{name}_DOW": str((day.weekday() + 1) % 7),  # 0 = sunday, as ecFlow
        f"{name}_JULIAN": str(julian_day(day)),
    }


@attrs.define(eq=False, kw_only=True)
class RepeatDate(Repeat):
    """``repeat date``: ``start``/``end`` are ``yyyymmdd``, ``step`` is in days."""

    kind: ClassVar[str] = "date"
    start: int
    end: int
    step: int = 1

    def _check(self) -> None:
        first, last = _date(self.start, "start"), _date(self.end, "end")
        if self.step == 0:
            raise _SpecProblem("the step must not be zero")
        if (last - first).days * self.step < 0:
            raise _SpecProblem(f"the step {self.step} does not lead from start to end")

    def to_text(self) -> str:
        return f"date {self.name} {self.start} {self.end} {self.step}"

    @property
    def count(self) -> int:
        return (parse_yyyymmdd(self.end) - parse_yyyymmdd(self.start)).days // self.step + 1

    def _value_at(self, index: int) -> int:
        return to_yyyymmdd(parse_yyyymmdd(self.start) + dt.timedelta(days=index * self.step))

    def expr_value(self) -> DateValue:
        return DateValue(self._value_at(self.index))

    def variables(self) -> dict[str, str]:
        return _date_variables(self.name, self._value_at(self.index))

    def _index_of(self, text: str) -> int:
        try:
            days = (parse_yyyymmdd(text) - parse_yyyymmdd(self.start)).days
        except InvalidValueError:
            raise self._not_a_value(text) from None
        index, off_step = divmod(days, self.step)
        if off_step or not 0 <= index < self.count:
            raise self._not_a_value(text)
        return index


@attrs.define(eq=False, kw_only=True)
class RepeatDateList(Repeat):
    """``repeat datelist``: any ``yyyymmdd`` dates, in the given order."""

    kind: ClassVar[str] = "datelist"
    dates: tuple[int, ...]

    def _check(self) -> None:
        if not self.dates:
            raise _SpecProblem("expected at least one date")
        for value in self.dates:
            _date(value, "date")

    def to_text(self) -> str:
        return " ".join(["datelist", self.name, *map(str, self.dates)])

    @property
    def count(self) -> int:
        return len(self.dates)

    def _value_at(self, index: int) -> int:
        return self.dates[index]

    def expr_value(self) -> DateValue:
        return DateValue(self.dates[self.index])

    def variables(self) -> dict[str, str]:
        return _date_variables(self.name, self.dates[self.index])

    def _index_of(self, text: str) -> int:
        if text.isdigit() and int(text) in self.dates:
            return self.dates.index(int(text))
        raise self._not_a_value(text)


@attrs.define(eq=False, kw_only=True)
class RepeatInteger(Repeat):
    """``repeat integer``: ``start``, ``start + step``, ... up to ``end``."""

    kind: ClassVar[str] = "integer"
    start: int
    end: int
    step: int = 1

    def _check(self) -> None:
        if self.step == 0:
            raise _SpecProblem("the step must not be zero")
        if (self.end - self.start) * self.step < 0:
            raise _SpecProblem(f"the step {self.step} does not lead from start to end")

    def to_text(self) -> str:
        return f"integer {self.name} {self.start} {self.end} {self.step}"

    @property
    def count(self) -> int:
        return (self.end - self.start) // self.step + 1

    def _value_at(self, index: int) -> int:
        return self.start + index * self.step

    def _index_of(self, text: str) -> int:
        try:
            index, off_step = divmod(int(text) - self.start, self.step)
        except ValueError:
            raise self._not_a_value(text) from None
        if off_step or not 0 <= index < self.count:
            raise self._not_a_value(text)
        return index


@attrs.define(eq=False, kw_only=True)
class RepeatEnumerated(Repeat):
    """``repeat enumerated``: a list of words; numeric words count as numbers in triggers."""

    kind: ClassVar[str] = "enumerated"
    values: tuple[str, ...]

    def _check(self) -> None:
        if not self.values:
            raise _SpecProblem("expected at least one value")

    def to_text(self) -> str:
        return " ".join([self.kind, self.name, *map(_quote, self.values)])

    @property
    def count(self) -> int:
        return len(self.values)

    def _value_at(self, index: int) -> str:
        return self.values[index]

    def expr_value(self) -> int:
        """The value as an integer when it is one, else the index (as ecFlow)."""
        try:
            return int(self.values[self.index])
        except ValueError:
            return self.index

    def variables(self) -> dict[str, str]:
        return {self.name: self.values[self.index], f"{self.name}_INDEX": str(self.index)}

    def _index_of(self, text: str) -> int:
        if text not in self.values:
            raise self._not_a_value(text)
        return self.values.index(text)


@attrs.define(eq=False, kw_only=True)
class RepeatString(RepeatEnumerated):
    """``repeat string``: as ``enumerated``."""

    kind: ClassVar[str] = "string"


@attrs.define(eq=False, kw_only=True)
class RepeatDay(Repeat):
    """``repeat day``: endless; its value is ``step`` (days), as in ecFlow."""

    kind: ClassVar[str] = "day"
    name: str = "day"
    step: int = 1

    def _check(self) -> None:
        if self.name != "day":
            raise _SpecProblem("the name of a repeat day is always 'day'")
        if self.step < 1:
            raise _SpecProblem("the step must be a positive number of days")

    def to_text(self) -> str:
        return f"day {self.step}"

    @property
    def count(self) -> None:
        return None

    def _value_at(self, index: int) -> int:
        return self.step

    def _index_of(self, text: str) -> int:
        raise RepeatError("repeat day has no values to set")


def _parse_range(cls: type[RepeatDate | RepeatInteger], args: list[str]) -> Repeat:
    if len(args) not in (3, 4):
        raise _SpecProblem("expected NAME START END [STEP]")
    step = _int(args[3], "step") if len(args) == 4 else 1
    return cls(name=args[0], start=_int(args[1], "start"), end=_int(args[2], "end"), step=step)


def _parse_datelist(args: list[str]) -> Repeat:
    if len(args) < 2:
        raise _SpecProblem("expected NAME and at least one date")
    return RepeatDateList(name=args[0], dates=tuple(_int(a, "date") for a in args[1:]))


def _parse_words(cls: type[RepeatEnumerated], args: list[str]) -> Repeat:
    if len(args) < 2:
        raise _SpecProblem("expected NAME and at least one value")
    return cls(name=args[0], values=tuple(args[1:]))


def _parse_day(args: list[str]) -> Repeat:
    if len(args) > 1:
        raise _SpecProblem("expected at most a STEP")
    return RepeatDay(step=_int(args[0], "step") if args else 1)


_PARSERS: dict[str, Callable[[list[str]], Repeat]] = {
    "date": lambda args: _parse_range(RepeatDate, args),
    "datelist": _parse_datelist,
    "integer": lambda args: _parse_range(RepeatInteger, args),
    "enumerated": lambda args: _parse_words(RepeatEnumerated, args),
    "string": lambda args: _parse_words(RepeatString, args),
    "day": _parse_day,
}

#: The Repeat class of each kind, for the codec.
REPEAT_KINDS: dict[str, type[Repeat]] = {
    cls.kind: cls
    for cls in (
        RepeatDate,
        RepeatDateList,
        RepeatInteger,
        RepeatEnumerated,
        RepeatString,
        RepeatDay,
    )
}


def parse_repeat(text: str) -> Repeat:
    """Parse the spec after ``repeat``, e.g. ``date YMD 20240101 20241231 1``.

    Raises:
        RepeatError: malformed spec; the message names the text and the problem.
    """
    try:
        try:
            tokens = shlex.split(text)
        except ValueError as e:
            raise _SpecProblem(f"cannot split into words ({e})") from None
        if not tokens:
            raise _SpecProblem(f"the spec is empty; expected one of {', '.join(_PARSERS)}")
        parser = _PARSERS.get(tokens[0].lower())
        if parser is None:
            raise _SpecProblem(f"unknown kind {tokens[0]!r}; expected one of {', '.join(_PARSERS)}")
        return parser(tokens[1:])
    except _SpecProblem as e:
        raise RepeatError(f"bad repeat {text.strip()!r}: {e.problem}") from None
